-- The broker protocol: enqueue, register and heartbeat, claim, finish, release, rescue, prune.
-- Applied again by the migrator whenever a function file changes (see Migrator); edit in place.
-- See docs/broker.md.

CREATE FUNCTION canvas.max_crashes() RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT 3';

-- One NOTIFY per inserting statement and queue (never per row): NOTIFY serialises commits.
CREATE FUNCTION canvas.notify_new_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('canvas_jobs', q.queue)
    FROM (SELECT DISTINCT n.queue FROM new_jobs n WHERE n.state = 'queued' AND n.run_at <= now()) q;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify AFTER INSERT ON canvas.jobs
    REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION canvas.notify_new_jobs();

-- SELECT canvas.enqueue('canvas.add', '[1, 2]', queue => 'default', priority => 0);
-- Checked by the same rules as a canvas's signatures (canvas.validate_canvas).
CREATE FUNCTION canvas.enqueue(
    task text,
    args jsonb DEFAULT '[]',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT 4
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF args IS NULL OR jsonb_typeof(args) <> 'array' THEN
        RAISE EXCEPTION 'args: expected a JSON array of positional arguments, not %',
            coalesce(jsonb_typeof(args), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF max_attempts IS NULL OR max_attempts NOT BETWEEN 1 AND 1001 THEN
        RAISE EXCEPTION 'max_attempts: expected an integer from 1 to 1001' USING ERRCODE = '22023';
    END IF;
    IF run_at IS NULL OR run_at > now() + interval '315360000 seconds' OR NOT isfinite(run_at) THEN
        RAISE EXCEPTION 'run_at: expected a time within 10 years' USING ERRCODE = '22023';
    END IF;
    PERFORM canvas.validate_canvas(
        jsonb_build_object('task', to_jsonb(enqueue.task), 'args', args,
                           'options', jsonb_build_object('queue', to_jsonb(coalesce(enqueue.queue, 'default')),
                                                         'priority', coalesce(enqueue.priority, 0))), '');
    INSERT INTO canvas.jobs (task, args, queue, priority, run_at, max_attempts)
    VALUES (enqueue.task, enqueue.args, coalesce(enqueue.queue, 'default'), coalesce(enqueue.priority, 0),
            enqueue.run_at, enqueue.max_attempts)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- A worker states its own heartbeat interval and how long a silence means it is dead: others
-- rescue its jobs by those terms, never by their own.
CREATE FUNCTION canvas.register_worker(
    p_hostname text, p_pid integer, p_queues text[], p_concurrency integer, p_heartbeat_interval double precision,
    p_rescue_after double precision
) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO canvas.workers (hostname, pid, queues, concurrency, heartbeat_interval, rescue_after)
    VALUES (p_hostname, p_pid, p_queues, p_concurrency, p_heartbeat_interval, p_rescue_after) RETURNING id
$$;

-- False when the worker's row is gone: it was presumed dead and its jobs were rescued.
-- p_counts, when given, adds what the worker finished since its last beat to canvas.finish_counts
-- ({"task": [succeeded, failed, retried], …}). Each beat also tells a dashboard (LISTEN
-- canvas_dashboard) that jobs may have moved: finishing sends no NOTIFY, which would serialise
-- the finishes' commits.
CREATE FUNCTION canvas.heartbeat(p_worker bigint, p_counts jsonb DEFAULT NULL) RETURNS boolean LANGUAGE sql AS $$
    SELECT pg_notify('canvas_dashboard', p_worker::text);
    INSERT INTO canvas.finish_counts AS f (minute, task, succeeded, failed, retried)
    SELECT date_trunc('minute', now()), c.key, (c.value->>0)::bigint, (c.value->>1)::bigint, (c.value->>2)::bigint
    FROM jsonb_each(CASE WHEN jsonb_typeof(p_counts) = 'object' THEN p_counts ELSE '{}' END) AS c
    ORDER BY c.key
    ON CONFLICT (minute, task) DO UPDATE
        SET succeeded = f.succeeded + excluded.succeeded, failed = f.failed + excluded.failed,
            retried = f.retried + excluded.retried;
    DELETE FROM canvas.finish_counts
    WHERE p_counts IS NOT NULL AND minute < date_trunc('minute', now()) - interval '1 day';
    WITH beat AS (UPDATE canvas.workers SET heartbeat_at = now() WHERE id = p_worker RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM beat)
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
CREATE FUNCTION canvas.promote_due(p_limit integer DEFAULT 1000) RETURNS integer LANGUAGE plpgsql AS $$
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

-- Claims up to p_limit runnable jobs of the given queues for a worker, in priority order. Each
-- queue is read through jobs_queued_idx on its own, so another queue's backlog is never scanned.
CREATE FUNCTION canvas.claim(p_worker bigint, p_queues text[], p_limit integer)
RETURNS TABLE (id bigint, task text, args jsonb, attempt integer, time_limit double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF NOT EXISTS (SELECT 1 FROM canvas.workers w WHERE w.id = p_worker) THEN
        RAISE EXCEPTION 'worker % is not registered (presumed dead and rescued)', p_worker
            USING ERRCODE = 'PCW01';
    END IF;
    PERFORM canvas.promote_due();
    -- = ANY(ARRAY(…)) makes the planner run the SKIP LOCKED scans first and then fetch by id.
    -- With several queues each may lock up to p_limit rows; those not taken are unlocked at commit.
    RETURN QUERY
    UPDATE canvas.jobs j
    SET state = 'running', worker_id = p_worker, attempt = j.attempt + 1, started_at = now()
    WHERE j.id = ANY (ARRAY(
        SELECT c.id FROM unnest(p_queues) AS q(name), LATERAL (
            SELECT x.id, x.priority FROM canvas.jobs x
            WHERE x.state = 'queued' AND x.queue = q.name
            ORDER BY x.priority, x.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED) c
        ORDER BY c.priority, c.id
        LIMIT p_limit))
    RETURNING j.id, j.task, j.args, j.attempt, j.time_limit;
END
$$;

-- Records how a batch of runs ended, in one transaction, and carries out what follows from it:
-- the next link of a chain, a chord's counter, error callbacks, and the canvases a task spawned
-- (committed with its success, so a task that crashes and is retried leaves no duplicate).
--   outcome 'succeeded': result holds the task's return value, spawn a JSON array of canvases;
--   'error' or 'timeout': retried with exponential backoff while attempts remain, else failed;
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
-- without hash joins the plan reads them in that order (nested loop) or by the primary key
-- (merge join), so the lock order holds for any batch size.
SET enable_hashjoin = off
AS $$
#variable_conflict use_column
DECLARE
    done canvas.finished_run[];
    r canvas.finished_run;
    g record;
    s jsonb;
BEGIN
    IF p_outcomes <@ ARRAY['succeeded'] THEN
        -- The common case, a batch of successes, is one plain UPDATE.
        WITH u AS (
            UPDATE canvas.jobs j SET state = 'succeeded', result = i.result, error = NULL, finished_at = now()
            FROM unnest(p_ids, p_attempts, p_results, p_spawns) AS i(id, attempt, result, spawn)
            WHERE j.id = i.id AND j.worker_id = p_worker AND j.attempt = i.attempt AND j.finished_at IS NULL
            RETURNING j.id, j.chain, j.chord_id, j.position, j.on_error, j.result, j.task, i.spawn
        )
        SELECT array_agg(ROW(u.id, 'succeeded', NULL, u.chain, u.chord_id, u.position, u.on_error, u.result,
                             u.task, NULL, u.spawn)::canvas.finished_run)
        INTO done FROM u;
    ELSE
        WITH input AS (
            SELECT * FROM unnest(p_ids, p_attempts, p_outcomes, p_results, p_errors, p_spawns)
                AS i(id, attempt, outcome, result, error, spawn)
        ), decided AS (
            SELECT j.id, i.attempt, i.outcome, i.result, i.error, i.spawn,
                CASE
                    WHEN i.outcome = 'succeeded' THEN 'succeeded'
                    WHEN i.outcome IN ('error', 'timeout') AND j.attempt - j.crashes < j.max_attempts THEN 'retry'
                    WHEN i.outcome = 'crashed' AND j.crashes + 1 < canvas.max_crashes() THEN 'requeue'
                    ELSE 'failed'
                END AS verdict,
                least(j.retry_backoff * power(2, least(greatest(j.attempt - j.crashes - 1, 0), 30)), 3600)
                    * (0.9 + random() * 0.2) AS backoff
            FROM canvas.jobs j JOIN input i ON i.id = j.id
            WHERE j.worker_id = p_worker AND j.attempt = i.attempt AND j.finished_at IS NULL
        ), updated AS (
            -- The fence is repeated here so that a row changed since `decided` read it is rechecked.
            UPDATE canvas.jobs j SET
                state = CASE d.verdict WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed'
                    WHEN 'retry' THEN CASE WHEN d.backoff > 0 THEN 'scheduled' ELSE 'queued' END
                    ELSE 'queued' END,
                result = CASE WHEN d.verdict = 'succeeded' THEN d.result ELSE j.result END,
                error = CASE
                    WHEN d.verdict = 'succeeded' THEN NULL
                    WHEN d.outcome = 'crashed' AND d.verdict = 'failed' THEN
                        format('the pool process died %s times running this job (%s); not retrying it again',
                               j.crashes + 1, d.error)
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
            RETURNING j.id, j.state, j.queue, j.run_at, j.chain, j.chord_id, j.position, j.on_error, j.result,
                      j.task, j.error, d.spawn
        ), woken AS (
            SELECT pg_notify('canvas_jobs', u.queue) FROM updated u WHERE u.state = 'queued' GROUP BY u.queue
        )
        SELECT array_agg(ROW(u.id, u.state, CASE WHEN u.state IN ('queued', 'scheduled')
                                 THEN extract(epoch FROM u.run_at - now())::double precision END,
                             u.chain, u.chord_id, u.position, u.on_error, u.result, u.task, u.error,
                             u.spawn)::canvas.finished_run)
        INTO done FROM updated u LEFT JOIN (SELECT count(*) FROM woken) w ON true;
    END IF;

    IF done IS NULL THEN
        RETURN;
    END IF;

    -- Follow-ups, only for runs that have any: plain jobs cost nothing more.
    IF EXISTS (SELECT 1 FROM unnest(done) d
               WHERE d.chain IS NOT NULL OR d.chord_id IS NOT NULL OR d.spawn IS NOT NULL
                  OR (d.state = 'failed' AND d.on_error IS NOT NULL)) THEN
        PERFORM canvas.lock_roots(ARRAY(SELECT DISTINCT d.chord_id FROM unnest(done) d WHERE d.chord_id IS NOT NULL));

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
                UPDATE canvas.jobs SET state = 'failed', result = NULL, error = done[i].error
                WHERE canvas.jobs.id = r.id;
            END;
        END LOOP;

        -- The links still to run carry their own error callbacks: nothing is inherited here.
        FOR r IN SELECT * FROM unnest(done) d WHERE d.state = 'succeeded' AND d.chain IS NOT NULL LOOP
            PERFORM canvas.expand(r.chain->0, r.chain - 0, r.chord_id, r.position, NULL,
                                  jsonb_build_array(r.result), r.id);
        END LOOP;

        -- One counter update per chord per batch.
        FOR g IN SELECT d.chord_id AS chord_id, count(*)::integer AS k FROM unnest(done) d
                 WHERE d.state = 'succeeded' AND d.chain IS NULL AND d.chord_id IS NOT NULL
                 GROUP BY d.chord_id ORDER BY d.chord_id LOOP
            PERFORM canvas.report_success(g.chord_id, g.k);
        END LOOP;

        FOR r IN SELECT * FROM unnest(done) d WHERE d.state = 'failed' ORDER BY d.id LOOP
            PERFORM canvas.job_failed(r.id, r.task, r.error, r.chord_id, r.on_error);
        END LOOP;
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
        UPDATE canvas.jobs SET state = 'failed', result = NULL, error = message, finished_at = now() WHERE id = p_id;
        PERFORM canvas.job_failed(j.id, j.task, message, j.chord_id, j.on_error);
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded OR raise_exception THEN
        message := message || '; its error callbacks could not be enqueued either: ' || SQLERRM;
        UPDATE canvas.jobs SET state = 'failed', result = NULL, error = message, finished_at = now() WHERE id = p_id;
        PERFORM canvas.fail_chords_quietly(j.chord_id, message);
    END;
    RETURN 'failed';
END
$$;

CREATE FUNCTION canvas.finish_and_claim(
    p_worker bigint, p_ids bigint[], p_attempts integer[], p_outcomes text[], p_results jsonb[], p_errors text[],
    p_spawns jsonb[], p_queues text[], p_limit integer
) RETURNS TABLE (
    kind text, id bigint, state text, retry_in double precision, task text, args jsonb, attempt integer,
    time_limit double precision
) LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_ids) > 0 THEN
        RETURN QUERY SELECT 'finished'::text, f.id, f.state, f.retry_in, NULL::text, NULL::jsonb, NULL::integer,
                            NULL::double precision
                     FROM canvas.finish(p_worker, p_ids, p_attempts, p_outcomes, p_results, p_errors, p_spawns) f;
    END IF;
    IF p_limit > 0 THEN
        RETURN QUERY SELECT 'claimed'::text, c.id, NULL::text, NULL::double precision, c.task, c.args, c.attempt,
                            c.time_limit
                     FROM canvas.claim(p_worker, p_queues, p_limit) c;
    END IF;
END
$$;

-- Hands jobs back to the queue without counting the run (prefetched jobs at warm shutdown,
-- running jobs at cold shutdown). Fenced like finish.
CREATE FUNCTION canvas.release(p_worker bigint, p_ids bigint[], p_attempts integer[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
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
RETURNS TABLE (job_id bigint, new_state text) LANGUAGE plpgsql AS $$
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
