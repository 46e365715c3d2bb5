-- The broker protocol: enqueue, register and heartbeat, claim, finish, release, rescue, prune.
-- Applied again by the migrator whenever a function file changes (see Migrator); edit in place.
-- See docs/broker.md.
--
-- The functions that read canvas.jobs on the hot path (claim, promote_due, finish, release,
-- expire_due, rescue) run with enable_seqscan off. A session plans a function's statements once
-- and keeps the plans until the table is analysed again: a worker that starts on an empty queue
-- plans for an empty table, and after a burst of a few thousand jobs every claim read the whole
-- table (2 to 5 ms each) until autovacuum analysed it, a minute or more later. Every statement
-- here has an index that serves it, so the setting only takes away the plans that stale
-- statistics would choose. Where a small table has no index to use (canvas.workers in rescue),
-- the sequential scan it still gets is priced as disabled, high enough to start the JIT
-- compiler: 300 ms a rescue. They run with jit off, as claim_select and prune do: JIT never pays
-- for statements of a few milliseconds.
--
-- claim, finish and expire_due also keep one generic plan per statement (plan_cache_mode, which
-- the functions they call inherit). Left to choose, PostgreSQL planned most of their statements
-- again on every call: with a few jobs a round (long tasks, as the voter rolls' stations are),
-- planning was a third of the server's CPU for a round: 0.97-1.12 ms of CPU a round of three
-- jobs against 0.64-0.67 with generic plans (`canvas-bench rounds 3000 3`; docs/broker.md).
-- A plan made once must suit any table size, and these join a few rows to canvas.jobs by key:
-- they join by nested loop only. A hash or merge join planned on an empty table would read the
-- whole primary key on every call once the table is large.

CREATE FUNCTION canvas.max_crashes() RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT 3';

-- One NOTIFY per inserting statement and queue (never per row): NOTIFY serialises commits.
-- The queues are told apart by hashing. The planner has no statistics for a transition table's
-- columns: it guessed that 167 of a 100,000-member chord's rows pass the filter, sorted them,
-- and the sort spilled to disk (42 ms of the chord's 0.7 s enqueue, against 23-30 ms).
CREATE FUNCTION canvas.notify_new_jobs() RETURNS trigger LANGUAGE plpgsql SET enable_sort = off AS $$
BEGIN
    PERFORM pg_notify('canvas_jobs', q.queue)
    FROM (SELECT DISTINCT n.queue FROM new_jobs n WHERE n.state = 'queued' AND n.run_at <= now()) q;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify AFTER INSERT ON canvas.jobs
    REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION canvas.notify_new_jobs();

-- Celery's name for a job's state (PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED): a job
-- waiting to run again after an error shows RETRY.
CREATE FUNCTION canvas.celery_state(state text, attempt integer, error text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE state
        WHEN 'running' THEN 'STARTED' WHEN 'succeeded' THEN 'SUCCESS' WHEN 'failed' THEN 'FAILURE'
        WHEN 'cancelled' THEN 'REVOKED'
        ELSE CASE WHEN attempt > 0 AND error IS NOT NULL THEN 'RETRY' ELSE 'PENDING' END END
$$;

-- SELECT canvas.enqueue('canvas.add', '[1, 2]', queue => 'default', priority => 0);
-- SELECT canvas.enqueue('reports.send', kwargs => '{"to": "ops"}', options => '{"expires": 60, "unique_key": "daily"}');
-- Checked by the same rules as a canvas's signatures (canvas.validate_canvas). `options` takes any
-- option in its JSON form (docs/canvas.md); countdown or eta there win over run_at, max_retries
-- over max_attempts. A unique key that already stands for a job gives that job's id.
CREATE FUNCTION canvas.enqueue(
    task text,
    args jsonb DEFAULT '[]',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT 4,
    kwargs jsonb DEFAULT NULL,
    options jsonb DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
    s jsonb;
BEGIN
    IF args IS NULL OR jsonb_typeof(args) <> 'array' THEN
        RAISE EXCEPTION 'args: expected a JSON array of positional arguments, not %',
            coalesce(jsonb_typeof(args), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF kwargs IS NOT NULL AND jsonb_typeof(kwargs) <> 'object' THEN
        RAISE EXCEPTION 'kwargs: expected a JSON object of keyword arguments, not %', jsonb_typeof(kwargs)
            USING ERRCODE = '22023';
    END IF;
    IF options IS NOT NULL AND jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'options: expected an object' USING ERRCODE = '22023';
    END IF;
    IF max_attempts IS NULL OR max_attempts NOT BETWEEN 1 AND 1001 THEN
        RAISE EXCEPTION 'max_attempts: expected an integer from 1 to 1001' USING ERRCODE = '22023';
    END IF;
    IF run_at IS NULL OR run_at > now() + interval '315360000 seconds' OR NOT isfinite(run_at) THEN
        RAISE EXCEPTION 'run_at: expected a time within 10 years' USING ERRCODE = '22023';
    END IF;
    s := jsonb_strip_nulls(jsonb_build_object(
        'task', to_jsonb(enqueue.task), 'args', args, 'kwargs', kwargs,
        'options', jsonb_build_object('queue', to_jsonb(coalesce(enqueue.queue, 'default')),
                                      'priority', coalesce(enqueue.priority, 0))
                   || coalesce(options, '{}')));
    PERFORM canvas.validate_canvas(s, '');
    IF s->'options' ? 'unique_key' THEN
        new_id := canvas.unique_match(s->'options'->>'unique_key', (s->'options'->>'unique_for')::float8);
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
    END IF;
    INSERT INTO canvas.jobs (task, args, kwargs, queue, priority, run_at, max_attempts, retry_backoff, time_limit,
                             soft_time_limit, expires_at, ignore_result, unique_key, unique_for)
    SELECT f.task, f.args, f.kwargs, f.queue, f.priority,
           CASE WHEN s->'options' ?| ARRAY['countdown', 'eta'] THEN f.run_at ELSE enqueue.run_at END,
           CASE WHEN s->'options' ? 'max_retries' THEN f.max_attempts ELSE enqueue.max_attempts END,
           f.retry_backoff, f.time_limit, f.soft_time_limit, f.expires_at, f.ignore_result, f.unique_key, f.unique_for
    FROM canvas.job_fields(s, NULL) f
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- A worker states its own heartbeat interval and how long a silence means it is dead: others
-- rescue its jobs by those terms, never by their own.
-- p_connections: the most connections it may hold (canvas.reserve_connections).
CREATE FUNCTION canvas.register_worker(
    p_hostname text, p_pid integer, p_queues text[], p_concurrency integer, p_heartbeat_interval double precision,
    p_rescue_after double precision, p_connections integer DEFAULT 0
) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO canvas.workers (hostname, pid, queues, concurrency, heartbeat_interval, rescue_after, connections)
    VALUES (p_hostname, p_pid, p_queues, p_concurrency, p_heartbeat_interval, p_rescue_after, p_connections)
    RETURNING id
$$;

-- The connection budget a starting worker checks before it registers with its own bound, in
-- the same transaction: the slots max_connections leaves to ordinary roles, the client
-- connections that are not workers', and the bounds of every live worker. Bounds, not the
-- connections open now: pool processes connect only when a task needs the database, so a fleet
-- that fits at rest could run out under load. The lock, held until that transaction ends, makes
-- workers starting together count each other.
CREATE FUNCTION canvas.connection_budget(
    OUT usable integer, OUT other_clients integer, OUT workers_bound integer
) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(x'636f6e6e73'::bigint);
    usable := current_setting('max_connections')::integer
        - current_setting('superuser_reserved_connections')::integer
        - coalesce(current_setting('reserved_connections', true)::integer, 0);
    -- A worker of this database names its connections 'pgworker…' (application_name) and is
    -- counted by its bound instead; workers of other databases on the server count as what they
    -- hold now (their bounds are in their own canvas.workers).
    SELECT count(*) INTO other_clients FROM pg_stat_activity
    WHERE backend_type = 'client backend'
      AND NOT (datname = current_database() AND coalesce(application_name, '') LIKE 'pgworker%');
    SELECT coalesce(sum(w.connections), 0) INTO workers_bound FROM canvas.workers w
    WHERE w.heartbeat_at > now() - w.rescue_after * interval '1 second';
END
$$;

-- False when the worker's row is gone: it was presumed dead and its jobs were rescued.
-- p_counts, when given, adds what the worker finished since its last beat to canvas.finish_counts
-- ({"task": [succeeded, failed, retried], …}). Each beat also tells a dashboard (LISTEN
-- canvas_dashboard) that jobs may have moved: finishing sends no NOTIFY, which would serialise
-- the finishes' commits.
CREATE FUNCTION canvas.heartbeat(p_worker bigint, p_counts jsonb DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    alive boolean;
BEGIN
    UPDATE canvas.workers SET heartbeat_at = now() WHERE id = p_worker;
    alive := FOUND;
    -- The dashboard's statistics never stand in the way of liveness: a table locked by an
    -- operator, a grant missing or a full NOTIFY queue costs the counts of one beat, not the beat
    -- (a failed beat would get the worker presumed dead and its jobs rescued).
    BEGIN
        PERFORM set_config('lock_timeout', '200ms', true);
        PERFORM pg_notify('canvas_dashboard', p_worker::text);
        IF jsonb_typeof(p_counts) = 'object' THEN
            INSERT INTO canvas.finish_counts AS f (minute, task, succeeded, failed, retried)
            SELECT date_trunc('minute', now()), c.key, (c.value->>0)::bigint, (c.value->>1)::bigint,
                   (c.value->>2)::bigint
            FROM jsonb_each(p_counts) AS c
            ORDER BY c.key
            ON CONFLICT (minute, task) DO UPDATE
                SET succeeded = f.succeeded + excluded.succeeded, failed = f.failed + excluded.failed,
                    retried = f.retried + excluded.retried;
            DELETE FROM canvas.finish_counts WHERE minute < date_trunc('minute', now()) - interval '1 day';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgcanvas: heartbeat statistics not recorded: %', SQLERRM;
    END;
    RETURN alive;
END
$$;

CREATE FUNCTION canvas.deregister_worker(p_worker bigint) RETURNS void LANGUAGE sql AS $$
    DELETE FROM canvas.workers WHERE id = p_worker
$$;

-- Any insert of a job that is not due yet makes it 'scheduled', whichever client wrote it, so the
-- claim index never holds it. The WHEN clause keeps plain inserts free of a function call.
CREATE FUNCTION canvas.schedule_future_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.state := 'scheduled';
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_schedule_future BEFORE INSERT ON canvas.jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' AND NEW.run_at > now()) EXECUTE FUNCTION canvas.schedule_future_job();

-- Makes scheduled jobs that are due runnable, a bounded batch at a time, and wakes their queues.
-- Cheap when nothing is due: one probe of jobs_scheduled_idx.
CREATE FUNCTION canvas.promote_due(p_limit integer DEFAULT 1000) RETURNS integer LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off AS $$
DECLARE
    n integer;
BEGIN
    WITH due AS (
        SELECT s.id FROM canvas.jobs s
        WHERE s.state = 'scheduled' AND s.run_at <= now()
        ORDER BY s.run_at LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), promoted AS (
        UPDATE canvas.jobs j SET state = 'queued' FROM due WHERE j.id = due.id RETURNING j.queue
    ), queues AS (
        SELECT queue, count(*) AS c FROM promoted GROUP BY queue
    )
    SELECT coalesce(sum(c), 0), count(pg_notify('canvas_jobs', queue)) INTO n FROM queues;
    RETURN n;
END
$$;

-- Cancels waiting jobs whose expiry has passed, failing their canvases with their error
-- callbacks, a bounded batch at a time, and wakes the queues they stood in. Cheap when nothing
-- expires: one probe of jobs_expiring_idx. Called by each worker's maintenance thread in a
-- transaction of its own, never inside a claim: it takes canvas roots, and a claim that follows a
-- finish already holds some (docs/broker.md, lock order). A job waiting to retry that expires
-- keeps its last error in the message.
CREATE FUNCTION canvas.expire_due(p_limit integer DEFAULT 200) RETURNS integer LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    gone canvas.jobs[];
    j canvas.jobs;
BEGIN
    WITH due AS (
        SELECT x.id FROM canvas.jobs x
        WHERE x.expires_at <= now() AND x.expires_at IS NOT NULL AND x.state IN ('scheduled', 'queued')
        -- In jobs_expiring_idx's order, so a large expired backlog is read a batch at a time, not
        -- sorted whole. SKIP LOCKED never waits, so this order cannot deadlock.
        ORDER BY x.expires_at LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), expired AS (
        UPDATE canvas.jobs x SET state = 'cancelled', finished_at = now(), worker_id = NULL,
            error = format('expired: not run by %s', to_char(x.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
                    || CASE WHEN x.attempt > 0 AND x.error IS NOT NULL THEN '; its last error: ' || x.error ELSE '' END,
            error_type = 'TaskRevokedError'
        FROM due WHERE x.id = due.id
        RETURNING x.*
    )
    SELECT array_agg(e::canvas.jobs ORDER BY e.id) INTO gone FROM expired e;
    IF gone IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM canvas.lock_roots(ARRAY(SELECT DISTINCT g.chord_id FROM unnest(gone) g WHERE g.chord_id IS NOT NULL));
    FOR j IN SELECT * FROM unnest(gone) g WHERE g.chord_id IS NOT NULL OR g.on_error IS NOT NULL LOOP
        PERFORM canvas.job_failed_safely(j.id, j.task, j.error, j.chord_id, j.on_error);
    END LOOP;
    -- Claims read past expired jobs without taking them; the jobs behind them are runnable now.
    PERFORM pg_notify('canvas_jobs', q.queue) FROM (SELECT DISTINCT g.queue FROM unnest(gone) g) q;
    RETURN cardinality(gone);
END
$$;

-- Claims up to p_limit runnable jobs of the given queues for a worker, in priority order. Each
-- queue is read through jobs_queued_idx on its own, so another queue's backlog is never scanned.
-- Paused queues claim nothing, and rate and concurrency limits hold (canvas.claim_select). A job
-- whose expiry has passed is never handed out: the claim reads past it, and maintenance cancels
-- it (canvas.expire_due).
CREATE FUNCTION canvas.claim(p_worker bigint, p_queues text[], p_limit integer)
RETURNS TABLE (id bigint, task text, args jsonb, kwargs jsonb, attempt integer, time_limit double precision,
               soft_time_limit double precision, waited double precision)
LANGUAGE plpgsql SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
    SET enable_hashjoin = off SET enable_mergejoin = off AS $$
#variable_conflict use_column
DECLARE
    picked bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM canvas.workers w WHERE w.id = p_worker) THEN
        RAISE EXCEPTION 'worker % is not registered (presumed dead and rescued)', p_worker
            USING ERRCODE = 'PCW01';
    END IF;
    PERFORM canvas.promote_due();
    -- A rate or concurrency limit or a paused queue anywhere: canvas.claim_select (limits.sql)
    -- picks the jobs under its locks. None (the normal case): three probes of empty tables, and
    -- the plain selection below, in the UPDATE itself (a statement of its own would be planned
    -- again on every call, as this one is: tens of microseconds a claim).
    IF EXISTS (SELECT 1 FROM canvas.paused_queues) OR EXISTS (SELECT 1 FROM canvas.rate_limits)
       OR EXISTS (SELECT 1 FROM canvas.concurrency_limits) THEN
        picked := canvas.claim_select(p_queues, p_limit);
    END IF;
    IF picked IS NOT NULL THEN
        RETURN QUERY
        UPDATE canvas.jobs j
        SET state = 'running', worker_id = p_worker, attempt = j.attempt + 1, started_at = now()
        WHERE j.id = ANY (picked)
        -- waited: seconds since the job became due (run_at), for the queue-wait histogram.
        RETURNING j.id, j.task, j.args, j.kwargs, j.attempt, j.time_limit, j.soft_time_limit,
                  greatest(extract(epoch FROM now() - j.run_at), 0)::double precision;
        RETURN;
    END IF;
    -- ARRAY(…) runs the SKIP LOCKED scans first; the UPDATE then fetches the rows they locked by
    -- their physical address (a TID scan): a row locked here cannot move before this transaction
    -- ends, and the address spares a primary-key probe per job, through every dead entry the
    -- claims since the last vacuum left there (a third of the claim's time). With several
    -- queues each may lock up to p_limit rows; those not taken are unlocked at commit.
    RETURN QUERY
    UPDATE canvas.jobs j
    SET state = 'running', worker_id = p_worker, attempt = j.attempt + 1, started_at = now()
    WHERE j.ctid = ANY (ARRAY(
        SELECT c.ctid FROM unnest(p_queues) AS q(name), LATERAL (
            SELECT x.ctid, x.id, x.priority FROM canvas.jobs x
            WHERE x.state = 'queued' AND x.queue = q.name AND (x.expires_at IS NULL OR x.expires_at > now())
            ORDER BY x.priority, x.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED) c
        ORDER BY c.priority, c.id
        LIMIT p_limit))
    RETURNING j.id, j.task, j.args, j.kwargs, j.attempt, j.time_limit, j.soft_time_limit,
              greatest(extract(epoch FROM now() - j.run_at), 0)::double precision;
END
$$;

-- Records how a batch of runs ended, in one transaction, and carries out what follows from it:
-- the next link of a chain, a chord's counter, error callbacks, and the canvases a task spawned
-- (committed with its success, so a task that crashes and is retried leaves no duplicate).
--   outcome 'succeeded': result holds the task's return value, spawn a JSON array of canvases;
--   'error': retried with exponential backoff while attempts remain, else failed (the default
--   for tasks without a retry policy, and for every client that is not a pgworker);
--   'retry': the task asked for a retry (ctx.retry) or its worker's retry policy chose one;
--   result holds {"countdown": seconds, "max_retries": n}, both optional (no countdown: the
--   job's backoff; max_retries overrides the job's for this decision); the error is what the job
--   fails with when no retry is left;
--   'timeout': a time limit passed: failed at once (a policy that retries it sends 'retry');
--   'fatal': failed at once (unknown task, malformed arguments, a result too large);
--   'crashed': the pool process died, or lost its database connection; retried at once, without
--   spending an attempt, until canvas.max_crashes().
-- The fence is (worker, attempt, not finished). It deliberately does not say state = 'running':
-- that would let the planner drive the join from jobs_running_idx, whose entries for every job
-- the worker already finished stay until VACUUM, making each batch slower than the last.
-- Lock order: the job rows (the worker sends ids in ascending order), then the canvases' roots.
-- A statement error here fails the whole batch; the worker then records the runs in smaller
-- batches until it finds the run whose follow-ups cannot be recorded, and fails that run alone
-- with canvas.fail_unrecordable.
-- Returns each run it recorded with the job's new state and, for a retry, the seconds until it;
-- runs that were no longer this worker's are left out.
CREATE FUNCTION canvas.finish(
    p_worker bigint, p_ids bigint[], p_attempts integer[], p_outcomes text[], p_results jsonb[], p_errors text[],
    p_spawns jsonb[]
) RETURNS TABLE (id bigint, state text, retry_in double precision) LANGUAGE plpgsql
-- The job rows are locked in the order the join reads them: the worker sends ids ascending, and
-- the plan, a nested loop (no hash or merge joins), reads them in that order, so the lock order
-- holds for any batch size.
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    done canvas.finished_run[];
    r canvas.finished_run;
    g record;
    s jsonb;
    -- Which follow-ups the batch needs, read in one pass: a batch of chord members (a 100,000-member
    -- chord finishes in batches of a few hundred) then costs its root lock and one counter update,
    -- not a walk of the batch per kind of follow-up.
    needs record;
BEGIN
    IF p_outcomes <@ ARRAY['succeeded'] THEN
        -- The common case, a batch of successes, is one plain UPDATE.
        WITH u AS (
            UPDATE canvas.jobs j SET state = 'succeeded', result = CASE WHEN j.ignore_result THEN NULL ELSE i.result END,
                error = NULL, error_type = NULL, finished_at = now()
            FROM unnest(p_ids, p_attempts, p_results, p_spawns) AS i(id, attempt, result, spawn)
            WHERE j.id = i.id AND j.worker_id = p_worker AND j.attempt = i.attempt AND j.finished_at IS NULL
            RETURNING j.id, j.chain, j.chord_id, j.position, j.on_error, i.result, j.task, i.spawn, j.link
        )
        SELECT array_agg(ROW(u.id, 'succeeded', NULL, u.chain, u.chord_id, u.position, u.on_error, u.result,
                             u.task, NULL, u.spawn, u.link)::canvas.finished_run)
        INTO done FROM u;
    ELSE
        WITH input AS (
            SELECT * FROM unnest(p_ids, p_attempts, p_outcomes, p_results, p_errors, p_spawns)
                AS i(id, attempt, outcome, result, error, spawn)
        ), decided AS (
            SELECT j.id, i.attempt, i.outcome, i.result, i.error, i.spawn,
                CASE
                    WHEN i.outcome = 'succeeded' THEN 'succeeded'
                    WHEN i.outcome = 'error' AND j.attempt - j.crashes < j.max_attempts THEN 'retry'
                    WHEN i.outcome = 'retry' AND j.attempt - j.crashes
                         < CASE WHEN jsonb_typeof(i.result->'max_retries') = 'number'
                                THEN least(greatest((i.result->>'max_retries')::numeric, 0), 1000)::integer + 1
                                ELSE j.max_attempts END
                        THEN 'retry'
                    WHEN i.outcome = 'crashed' AND j.crashes + 1 < canvas.max_crashes() THEN 'requeue'
                    ELSE 'failed'
                END AS verdict,
                CASE WHEN i.outcome = 'retry' AND jsonb_typeof(i.result->'countdown') = 'number'
                    -- Through numeric, so that any JSON number a client sends is clamped, never refused.
                    THEN least(greatest((i.result->>'countdown')::numeric, 0), 315360000)::float8
                    ELSE least(j.retry_backoff * power(2, least(greatest(j.attempt - j.crashes - 1, 0), 30)), 3600)
                         * (0.9 + random() * 0.2)
                END AS backoff
            FROM canvas.jobs j JOIN input i ON i.id = j.id
            WHERE j.worker_id = p_worker AND j.attempt = i.attempt AND j.finished_at IS NULL
        ), updated AS (
            -- The fence is repeated here so that a row changed since `decided` read it is rechecked.
            UPDATE canvas.jobs j SET
                state = CASE d.verdict WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed'
                    WHEN 'retry' THEN CASE WHEN d.backoff > 0 THEN 'scheduled' ELSE 'queued' END
                    ELSE 'queued' END,
                result = CASE WHEN d.verdict = 'succeeded' THEN CASE WHEN j.ignore_result THEN NULL ELSE d.result END
                              ELSE j.result END,
                error_type = CASE
                    WHEN d.verdict = 'succeeded' THEN NULL
                    WHEN d.outcome = 'crashed' THEN 'WorkerLostError'
                    WHEN d.outcome = 'retry' AND d.error IS NULL THEN 'MaxRetriesExceededError'
                    -- The worker names the error's type beside a failed run (its result slot).
                    WHEN jsonb_typeof(d.result->'error_type') = 'string' THEN left(d.result->>'error_type', 200)
                    WHEN d.outcome = 'timeout' THEN 'TimeLimitExceeded'
                    ELSE 'TaskError' END,
                error = CASE
                    WHEN d.verdict = 'succeeded' THEN NULL
                    WHEN d.outcome = 'crashed' AND d.verdict = 'failed' THEN
                        format('the pool process died %s times running this job (%s); not retrying it again',
                               j.crashes + 1, d.error)
                    -- Celery's MaxRetriesExceededError, when the task gave no error of its own.
                    WHEN d.outcome = 'retry' AND d.error IS NULL THEN
                        CASE d.verdict
                            WHEN 'failed' THEN format('Can''t retry %s[%s]: max retries exceeded', j.task, j.id)
                            ELSE 'retry requested by the task' END
                    ELSE d.error END,
                crashes = j.crashes + (d.outcome = 'crashed')::integer,
                run_at = CASE d.verdict
                    WHEN 'retry' THEN now() + d.backoff * interval '1 second'
                    WHEN 'requeue' THEN now()
                    ELSE j.run_at END,
                worker_id = CASE WHEN d.verdict IN ('retry', 'requeue') THEN NULL ELSE j.worker_id END,
                finished_at = CASE WHEN d.verdict IN ('succeeded', 'failed') THEN now() ELSE NULL END
            FROM decided d
            WHERE j.id = d.id AND j.worker_id = p_worker AND j.attempt = d.attempt AND j.finished_at IS NULL
            RETURNING j.id, j.state, j.queue, j.run_at, j.chain, j.chord_id, j.position, j.on_error,
                      CASE WHEN j.state = 'succeeded' THEN d.result END AS result, j.task, j.error, d.spawn, j.link
        ), woken AS (
            SELECT pg_notify('canvas_jobs', u.queue) FROM updated u WHERE u.state = 'queued' GROUP BY u.queue
        )
        SELECT array_agg(ROW(u.id, u.state, CASE WHEN u.state IN ('queued', 'scheduled')
                                 THEN extract(epoch FROM u.run_at - now())::double precision END,
                             u.chain, u.chord_id, u.position, u.on_error, u.result, u.task, u.error,
                             u.spawn, u.link)::canvas.finished_run)
        INTO done FROM updated u LEFT JOIN (SELECT count(*) FROM woken) w ON true;
    END IF;

    IF done IS NULL THEN
        RETURN;
    END IF;

    -- Follow-ups, only for runs that have any: plain jobs cost nothing more.
    IF EXISTS (SELECT 1 FROM unnest(done) d
               WHERE d.chain IS NOT NULL OR d.chord_id IS NOT NULL OR d.spawn IS NOT NULL OR d.link IS NOT NULL
                  OR (d.state = 'failed' AND d.on_error IS NOT NULL)) THEN
        SELECT bool_or(d.state = 'succeeded' AND CASE jsonb_typeof(d.spawn) WHEN 'array' THEN jsonb_array_length(d.spawn) > 0
                                                    ELSE d.spawn IS NOT NULL END) AS spawns,
               bool_or(d.state = 'succeeded' AND d.link IS NOT NULL) AS links,
               bool_or(d.state = 'succeeded' AND d.chain IS NOT NULL) AS chains,
               bool_or(d.state = 'succeeded' AND d.chain IS NULL AND d.chord_id IS NOT NULL) AS counts,
               bool_or(d.state = 'failed') AS failures,
               array_agg(DISTINCT d.chord_id) FILTER (WHERE d.chord_id IS NOT NULL) AS chords
        INTO needs FROM unnest(done) d;
        PERFORM canvas.lock_roots(needs.chords);

        IF needs.spawns THEN
            -- Unique keys of the spawned canvases, locked in one order (advisory locks come last in
            -- the lock order, ascending), so two batches spawning the same keys never deadlock.
            PERFORM canvas.lock_unique_keys(ARRAY(
                SELECT x.value->'options'->>'unique_key' FROM unnest(done) d, jsonb_array_elements(d.spawn) x
                WHERE d.state = 'succeeded' AND jsonb_typeof(d.spawn) = 'array' AND x.value->'options' ? 'unique_key'));

            -- Spawned canvases first: one that cannot be enqueued fails its task, with the reason,
            -- instead of the batch.
            FOR i IN 1 .. cardinality(done) LOOP
                r := done[i];
                CONTINUE WHEN r.state <> 'succeeded' OR r.spawn IS NULL OR jsonb_array_length(r.spawn) = 0;
                BEGIN
                    FOR s IN SELECT value FROM jsonb_array_elements(r.spawn) LOOP
                        PERFORM canvas.enqueue_canvas(s, r.id);
                    END LOOP;
                -- Refused for what it holds; locks, timeouts and resources fail the batch instead, which
                -- the worker sends again or splits.
                EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded
                               OR raise_exception THEN
                    done[i].state := 'failed';
                    done[i].error := 'the task spawned a canvas that could not be enqueued: ' || SQLERRM;
                    UPDATE canvas.jobs SET state = 'failed', result = NULL, error = done[i].error, error_type = 'SpawnRefused'
                    WHERE canvas.jobs.id = r.id;
                    needs.failures := true;
                END;
            END LOOP;
        END IF;

        -- Success callbacks: each a canvas of its own, with the result put first. One that cannot
        -- be started (it passed validation, so only a value written past it, or a result that
        -- makes it too large) leaves the task succeeded, with the reason as its error.
        IF needs.links THEN
            FOR r IN SELECT * FROM unnest(done) d WHERE d.state = 'succeeded' AND d.link IS NOT NULL ORDER BY d.id LOOP
                BEGIN
                    FOR s IN SELECT value FROM jsonb_array_elements(canvas.as_list(r.link)) LOOP
                        PERFORM canvas.start_canvas(s, r.id, jsonb_build_array(r.result));
                    END LOOP;
                EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded
                               OR raise_exception THEN
                    UPDATE canvas.jobs SET error = 'its success callbacks could not be enqueued: ' || SQLERRM,
                        error_type = 'LinkRefused'
                    WHERE canvas.jobs.id = r.id;
                END;
            END LOOP;
        END IF;

        -- The links still to run carry their own error callbacks: nothing is inherited here.
        IF needs.chains THEN
            FOR r IN SELECT * FROM unnest(done) d WHERE d.state = 'succeeded' AND d.chain IS NOT NULL LOOP
                PERFORM canvas.expand(r.chain->0, r.chain - 0, r.chord_id, r.position, NULL,
                                      jsonb_build_array(r.result), r.id);
            END LOOP;
        END IF;

        -- One counter update per chord per batch. (A run whose spawn was refused above is failed
        -- now, and is not counted.)
        IF needs.counts THEN
            FOR g IN SELECT d.chord_id AS chord_id, count(*)::integer AS k FROM unnest(done) d
                     WHERE d.state = 'succeeded' AND d.chain IS NULL AND d.chord_id IS NOT NULL
                     GROUP BY d.chord_id ORDER BY d.chord_id LOOP
                PERFORM canvas.report_success(g.chord_id, g.k);
            END LOOP;
        END IF;

        IF needs.failures THEN
            FOR r IN SELECT * FROM unnest(done) d WHERE d.state = 'failed' ORDER BY d.id LOOP
                PERFORM canvas.job_failed(r.id, r.task, r.error, r.chord_id, r.on_error);
            END LOOP;
        END IF;
    END IF;

    RETURN QUERY SELECT d.id, d.state, d.retry_in FROM unnest(done) d;
END
$$;

-- A run whose outcome could not be recorded (canvas.finish raised for it alone): the job fails
-- with the cause, and so does its canvas, with its error callbacks. If even those cannot be
-- enqueued, the job and the chords above it are failed without them, so nothing stays pending.
-- Fenced like finish. Returns the job's new state, or NULL when the run was no longer ours.
CREATE FUNCTION canvas.fail_unrecordable(p_worker bigint, p_id bigint, p_attempt integer, p_cause text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    j canvas.jobs;
    message text := 'its outcome could not be recorded: ' || p_cause;
BEGIN
    SELECT * INTO j FROM canvas.jobs
    WHERE id = p_id AND worker_id = p_worker AND attempt = p_attempt AND finished_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM canvas.lock_roots(ARRAY[j.chord_id]);
    BEGIN
        UPDATE canvas.jobs SET state = 'failed', result = NULL, error = message, error_type = 'UnrecordableOutcome',
            finished_at = now() WHERE id = p_id;
        PERFORM canvas.job_failed(j.id, j.task, message, j.chord_id, j.on_error);
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded OR raise_exception THEN
        message := message || '; its error callbacks could not be enqueued either: ' || SQLERRM;
        UPDATE canvas.jobs SET state = 'failed', result = NULL, error = message, error_type = 'UnrecordableOutcome',
            finished_at = now() WHERE id = p_id;
        PERFORM canvas.fail_chords_quietly(j.chord_id, message);
    END;
    RETURN 'failed';
END
$$;

CREATE FUNCTION canvas.finish_and_claim(
    p_worker bigint, p_ids bigint[], p_attempts integer[], p_outcomes text[], p_results jsonb[], p_errors text[],
    p_spawns jsonb[], p_queues text[], p_limit integer
) RETURNS TABLE (
    kind text, id bigint, state text, retry_in double precision, task text, args jsonb, kwargs jsonb,
    attempt integer, time_limit double precision, soft_time_limit double precision, waited double precision
) LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_ids) > 0 THEN
        RETURN QUERY SELECT 'finished'::text, f.id, f.state, f.retry_in, NULL::text, NULL::jsonb, NULL::jsonb,
                            NULL::integer, NULL::double precision, NULL::double precision, NULL::double precision
                     FROM canvas.finish(p_worker, p_ids, p_attempts, p_outcomes, p_results, p_errors, p_spawns) f;
    END IF;
    IF p_limit > 0 THEN
        RETURN QUERY SELECT 'claimed'::text, c.id, NULL::text, NULL::double precision, c.task, c.args, c.kwargs,
                            c.attempt, c.time_limit, c.soft_time_limit, c.waited
                     FROM canvas.claim(p_worker, p_queues, p_limit) c;
    END IF;
END
$$;

-- Hands jobs back to the queue without counting the run (prefetched jobs at warm shutdown,
-- running jobs at cold shutdown). Fenced like finish. The rows are locked first, in ascending id
-- order, as the lock order asks (docs/broker.md): the UPDATE alone locks them in whatever order
-- its plan reads them, and a cancel of their canvas, locking the same rows ascending, could then
-- deadlock with it.
CREATE FUNCTION canvas.release(p_worker bigint, p_ids bigint[], p_attempts integer[])
RETURNS integer LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
DECLARE
    n integer;
BEGIN
    PERFORM 1 FROM canvas.jobs j
    WHERE j.id = ANY (p_ids) AND j.worker_id = p_worker AND j.state = 'running'
    ORDER BY j.id FOR UPDATE;
    WITH released AS (
        UPDATE canvas.jobs j SET state = 'queued', attempt = j.attempt - 1, worker_id = NULL,
            started_at = NULL, run_at = now()
        FROM unnest(p_ids, p_attempts) AS i(id, attempt)
        WHERE j.id = i.id AND j.attempt = i.attempt AND j.worker_id = p_worker AND j.state = 'running'
        RETURNING j.queue
    ), counted AS (
        SELECT queue, count(*) AS c FROM released GROUP BY queue
    )
    SELECT coalesce(sum(c), 0), count(pg_notify('canvas_jobs', queue)) INTO n FROM counted;
    RETURN n;
END
$$;

-- Requeues the running jobs of workers that stopped heartbeating (or whose row is gone), and
-- removes those workers. Each worker is judged by the rescue_after it registered with, never by
-- the rescuer's settings, and never by how long a job has run: a long job is never taken from a
-- worker that is alive. A job whose workers died under it canvas.max_crashes() times fails for
-- good, with its error callbacks and its canvas.
CREATE FUNCTION canvas.rescue()
RETURNS TABLE (job_id bigint, new_state text) LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
#variable_conflict use_column
DECLARE
    rescued canvas.jobs[];
    j canvas.jobs;
BEGIN
    WITH dead AS (
        DELETE FROM canvas.workers w WHERE w.heartbeat_at < now() - w.rescue_after * interval '1 second'
        RETURNING w.id
    ), orphaned AS (
        SELECT j.id FROM canvas.jobs j
        WHERE j.state = 'running'
          AND NOT EXISTS (
              SELECT 1 FROM canvas.workers w
              WHERE w.id = j.worker_id AND w.heartbeat_at >= now() - w.rescue_after * interval '1 second')
        ORDER BY j.id
        FOR UPDATE OF j SKIP LOCKED
    ), updated AS (
        UPDATE canvas.jobs j SET
            state = CASE WHEN j.crashes + 1 < canvas.max_crashes() THEN 'queued' ELSE 'failed' END,
            crashes = j.crashes + 1,
            error = CASE WHEN j.crashes + 1 < canvas.max_crashes() THEN j.error
                ELSE format('its worker died %s times while running it; not retrying it again', j.crashes + 1) END,
            error_type = CASE WHEN j.crashes + 1 < canvas.max_crashes() THEN j.error_type ELSE 'WorkerLostError' END,
            finished_at = CASE WHEN j.crashes + 1 < canvas.max_crashes() THEN NULL ELSE now() END,
            run_at = now(),
            worker_id = NULL
        FROM orphaned o WHERE j.id = o.id
        RETURNING j.*
    ), woken AS (
        SELECT pg_notify('canvas_jobs', u.queue) FROM updated u WHERE u.state = 'queued' GROUP BY u.queue
    )
    SELECT array_agg(u ORDER BY u.id) INTO rescued FROM updated u
    LEFT JOIN (SELECT count(*) FROM woken) w ON true
    LEFT JOIN (SELECT count(*) FROM dead) d ON true;
    IF rescued IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(rescued) u WHERE u.state = 'failed') THEN
        PERFORM canvas.lock_roots(ARRAY(SELECT DISTINCT u.chord_id FROM unnest(rescued) u
                                        WHERE u.state = 'failed' AND u.chord_id IS NOT NULL));
        -- Safely: a callback refused for its data must not stop rescue for the whole fleet.
        FOR j IN SELECT * FROM unnest(rescued) u WHERE u.state = 'failed' LOOP
            PERFORM canvas.job_failed_safely(j.id, j.task, j.error, j.chord_id, j.on_error);
        END LOOP;
    END IF;
    RETURN QUERY SELECT u.id, u.state FROM unnest(rescued) u;
END
$$;
