-- Fleet-wide rate limits, concurrency limits and paused queues (tables in 0013_canvas_limits.sql).
-- canvas.claim calls canvas.claim_select only when one of the three tables has a row; otherwise
-- it claims exactly as before. See docs/broker.md ("Limits and paused queues").

-- '100/m' → (100, 60). The one parser of a rate, for psql, Swift and the command line alike
-- (Swift's RateLimit.parse gives the same message).
CREATE FUNCTION canvas.parse_rate(p_rate text, OUT max_runs integer, OUT per_seconds integer)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text[] := regexp_match(coalesce(p_rate, ''), '^([0-9]{1,10})/([smh])$');
BEGIN
    IF m IS NULL OR m[1]::bigint NOT BETWEEN 1 AND 1000000000 THEN
        RAISE EXCEPTION 'rate: expected N/s, N/m or N/h with N from 1 to 1000000000, not "%"',
            coalesce(p_rate, 'NULL') USING ERRCODE = '22023';
    END IF;
    max_runs := m[1]::integer;
    per_seconds := CASE m[2] WHEN 's' THEN 1 WHEN 'm' THEN 60 ELSE 3600 END;
END
$$;

CREATE FUNCTION canvas.check_limit_name(p_scope text, p_name text) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_scope IS NULL OR p_scope NOT IN ('queue', 'task') THEN
        RAISE EXCEPTION 'scope: expected queue or task, not "%"', coalesce(p_scope, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF NOT canvas.is_name(to_jsonb(p_name)) THEN
        RAISE EXCEPTION '%: expected a % name (1 to 200 characters, no control characters)', p_scope, p_scope
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- SELECT canvas.set_rate_limit('voter_rolls.render', '100/m');
-- Changing the number keeps the current window's count; changing the window starts a new count.
CREATE FUNCTION canvas.set_rate_limit(p_task text, p_rate text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record := canvas.parse_rate(p_rate);
BEGIN
    PERFORM canvas.check_limit_name('task', p_task);
    INSERT INTO canvas.rate_limits AS l (task, max_runs, per_seconds) VALUES (p_task, r.max_runs, r.per_seconds)
    ON CONFLICT (task) DO UPDATE SET
        max_runs = excluded.max_runs, per_seconds = excluded.per_seconds,
        window_index = CASE WHEN l.per_seconds = excluded.per_seconds THEN l.window_index END,
        started = CASE WHEN l.per_seconds = excluded.per_seconds THEN l.started ELSE 0 END;
END
$$;

-- True when there was a limit to clear.
CREATE FUNCTION canvas.clear_rate_limit(p_task text) RETURNS boolean LANGUAGE sql AS $$
    WITH d AS (DELETE FROM canvas.rate_limits WHERE task = p_task RETURNING 1) SELECT EXISTS (SELECT 1 FROM d)
$$;

-- SELECT canvas.set_concurrency_limit('queue', 'pdf', 4);
CREATE FUNCTION canvas.set_concurrency_limit(p_scope text, p_name text, p_max_running integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM canvas.check_limit_name(p_scope, p_name);
    IF p_max_running IS NULL OR p_max_running NOT BETWEEN 1 AND 1000000000 THEN
        RAISE EXCEPTION 'concurrency: expected an integer from 1 to 1000000000' USING ERRCODE = '22023';
    END IF;
    INSERT INTO canvas.concurrency_limits (scope, name, max_running) VALUES (p_scope, p_name, p_max_running)
    ON CONFLICT (scope, name) DO UPDATE SET max_running = excluded.max_running;
END
$$;

CREATE FUNCTION canvas.clear_concurrency_limit(p_scope text, p_name text) RETURNS boolean LANGUAGE sql AS $$
    WITH d AS (DELETE FROM canvas.concurrency_limits WHERE scope = p_scope AND name = p_name RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM d)
$$;

-- True when the queue was running before (false: it was already paused).
CREATE FUNCTION canvas.pause_queue(p_queue text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM canvas.check_limit_name('queue', p_queue);
    INSERT INTO canvas.paused_queues (queue) VALUES (p_queue) ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;

-- True when the queue was paused. Wakes the queue's workers, so it drains at once.
CREATE FUNCTION canvas.resume_queue(p_queue text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM canvas.paused_queues WHERE queue = p_queue;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('canvas_jobs', p_queue);
    END IF;
    RETURN n > 0;
END
$$;

-- Which runnable jobs a claim takes when a limit or a pause exists: the ids, in claim order, of
-- at most p_limit queued jobs of the given queues, locked (FOR UPDATE SKIP LOCKED) and within
-- every limit. Called by canvas.claim, in its transaction; the rows it returns are marked running
-- before that transaction commits, and the limit rows it locked stay locked until then.
--
-- How it stays correct with many workers claiming at once: a limit is a row, and a claim that
-- would start jobs under a limit locks that row FOR UPDATE first, then counts (a rate limit's
-- counter is in the row; a concurrency limit counts the running jobs in a statement begun after
-- the lock was granted, so it sees every claim committed before). Claims of a limited queue or
-- task therefore take turns; claims of anything else take no lock at all.
-- Why a locked row and not a counter updated blindly or an advisory lock: the count and the
-- claim must be one decision, and the row lock is released by the same commit that makes the
-- claimed jobs 'running' (or the same rollback that undoes it), so no crash leaves a count wrong.
-- Deadlocks: a claim waits only for limit rows, never for jobs (SKIP LOCKED), and in one order:
-- queue limits by name, then the task limits first met, by name; tasks first met later in the
-- same claim are locked with SKIP LOCKED (a task whose row is busy waits for the next claim).
--
-- Fairness: jobs of a task that has reached its limit are passed over, not waited for, so the
-- jobs behind them in the same queue are claimed (a queue's head full of one rate-limited task
-- does not starve the others); they keep their place and go first once the limit allows. What
-- it costs: the claim reads past them in jobs_queued_idx, so a long run of blocked jobs at the
-- head of a queue makes that queue's claims slower (docs/broker.md).
-- How many more jobs of a limited task may start now: the least of its rate limit's room in the
-- current window (0 when another claim already counts a later window: its jobs' started_at would
-- fall in a window the counter no longer tracks) and its concurrency limit's free places. Called
-- with the task's limit rows locked; its count of running jobs is a statement of its own, begun
-- after the lock was granted.
CREATE FUNCTION canvas.task_room(p_task text, p_now double precision) RETURNS integer LANGUAGE sql AS $$
    SELECT least(
        (SELECT CASE
                    WHEN r.window_index IS NULL OR r.window_index < floor(p_now / r.per_seconds) THEN r.max_runs
                    WHEN r.window_index = floor(p_now / r.per_seconds) THEN greatest(r.max_runs - r.started, 0)
                    ELSE 0 END
         FROM canvas.rate_limits r WHERE r.task = p_task),
        (SELECT greatest(l.max_running - (SELECT count(*) FROM canvas.jobs j
                                          WHERE j.state = 'running' AND j.task = p_task), 0)::integer
         FROM canvas.concurrency_limits l WHERE l.scope = 'task' AND l.name = p_task))
$$;

-- Which runnable jobs a claim takes when a limit or a pause exists: the ids of at most p_limit
-- queued jobs of the given queues, locked (FOR UPDATE SKIP LOCKED) and within every limit.
-- Called by canvas.claim, in its transaction: the rows it returns are marked running before that
-- transaction commits, and the limit rows it locked stay locked until then.
--
-- Correct with many workers claiming at once: a limit is a row, and a claim that would start
-- jobs under a limit locks that row FOR UPDATE first, then counts (a rate limit's counter is in
-- the row; a concurrency limit counts the running jobs in a statement begun after the lock was
-- granted, so it sees every claim that held the lock before). Claims of one limited queue or task
-- therefore take turns; claims of anything else take no lock at all. A row lock rather than an
-- advisory lock or a counter kept elsewhere: the count and the claim become one decision, and the
-- lock goes with the same commit that makes the jobs 'running' (or the rollback that undoes it),
-- so a crash can never leave a count wrong.
-- No deadlock: a claim waits only for limit rows, never for jobs (SKIP LOCKED), and always in one
-- order: queue limits by name, then, in its first round, the rate rows and then the concurrency
-- rows of the limited tasks it met, by name. Tasks first met in a later round are locked with
-- SKIP LOCKED: a task whose row another claim holds just waits for the next claim.
--
-- No starvation: jobs of a task at its limit are passed over, not waited for, so the jobs behind
-- them in the same queue are claimed; they keep their place (priority, id) and go first once the
-- limit allows. The cost: the claim reads past them in jobs_queued_idx, so a long run of blocked
-- jobs at the head of a queue makes that queue's claims slower (docs/broker.md).
-- Generic plans, planned once per connection: with custom plans (PostgreSQL's choice here, as the
-- generic ones look dearer with a LIMIT it cannot see) every call planned its statements again,
-- 4/5 of its cost. Those generic plans cost enough on paper to cross jit_above_cost on a big
-- table, and compiling them would take milliseconds a claim: hence jit = off.
CREATE FUNCTION canvas.claim_select(p_queues text[], p_limit integer) RETURNS bigint[] LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET jit = off
AS $$
DECLARE
    now_s double precision := extract(epoch FROM now());
    queues text[];
    rooms integer[];              -- per queue: how many more it may start (NULL: no limit)
    picked bigint[] := '{}';
    skipped text[];               -- tasks at their limit: the scans pass them over
    limited text[];               -- tasks with a limit of either kind
    known text[] := '{}';         -- limited tasks met so far, with how many more each may start
    room_left integer[] := '{}';  -- and how many this claim starts (for the rate counters)
    taken integer[] := '{}';
    c_ids bigint[];
    c_tasks text[];
    c_qis integer[];
    newly text[];
    t text;
    k integer;
    q integer;
    wanted integer;
    queue_limits boolean;
    dropped boolean;
    ok boolean;
BEGIN
    -- What applies to this claim, in one statement: its queues less the paused ones, the limited
    -- tasks, the tasks whose rate window is already used up (read without a lock: safe, because a
    -- window's count only grows; a task that looks free here is checked again under its lock),
    -- and whether any of its queues has a limit.
    SELECT ARRAY(SELECT u.q FROM unnest(p_queues) u(q)
                 WHERE NOT EXISTS (SELECT 1 FROM canvas.paused_queues p WHERE p.queue = u.q)),
           ARRAY(SELECT r.task FROM canvas.rate_limits r
                 UNION SELECT l.name FROM canvas.concurrency_limits l WHERE l.scope = 'task'),
           ARRAY(SELECT r.task FROM canvas.rate_limits r
                 WHERE r.window_index > floor(now_s / r.per_seconds)
                    OR (r.window_index = floor(now_s / r.per_seconds) AND r.started >= r.max_runs)),
           EXISTS (SELECT 1 FROM canvas.concurrency_limits l WHERE l.scope = 'queue' AND l.name = ANY (p_queues))
    INTO queues, limited, skipped, queue_limits;
    IF cardinality(queues) = 0 OR p_limit <= 0 THEN
        RETURN picked;
    END IF;

    IF queue_limits THEN
        -- Locked in name order, then the running jobs counted under the lock.
        PERFORM 1 FROM canvas.concurrency_limits l
        WHERE l.scope = 'queue' AND l.name = ANY (queues) ORDER BY l.name FOR UPDATE;
        rooms := ARRAY(
            SELECT CASE WHEN l.name IS NOT NULL THEN
                       greatest(l.max_running - (SELECT count(*) FROM canvas.jobs r
                                                 WHERE r.state = 'running' AND r.queue = u.q), 0)::integer END
            FROM unnest(queues) WITH ORDINALITY u(q, o)
            LEFT JOIN canvas.concurrency_limits l ON l.scope = 'queue' AND l.name = u.q
            ORDER BY u.o);
    ELSE
        rooms := array_fill(NULL::integer, ARRAY[cardinality(queues)]);
    END IF;

    -- Each round claims past the tasks found at their limit in the rounds before, and ends the
    -- loop when it passes nothing over: at most one round per limited task, plus one.
    FOR pass IN 1 .. cardinality(limited) + 1 LOOP
        wanted := p_limit - cardinality(picked);
        EXIT WHEN wanted <= 0;
        -- The plain claim's per-queue scan of jobs_queued_idx, passing over the tasks at their
        -- limit and the rows this claim has already taken or passed over (they are its own locks).
        -- The task test is spelled so that the planner guesses it keeps a third of the rows: with
        -- `task <> ALL (skipped)` and a queue of one task it guessed none, and chose to read the
        -- whole table instead of the index (a pinned plan in LimitTests checks this).
        SELECT array_agg(c.id ORDER BY c.priority, c.id), array_agg(c.task ORDER BY c.priority, c.id),
               array_agg(c.qi ORDER BY c.priority, c.id)
        INTO c_ids, c_tasks, c_qis
        FROM (SELECT x.id, x.priority, x.task, q.o::integer AS qi
              FROM unnest(queues, rooms) WITH ORDINALITY AS q(name, room, o), LATERAL (
                  SELECT x.id, x.priority, x.task FROM canvas.jobs x
                  WHERE x.state = 'queued' AND x.queue = q.name AND (x.expires_at IS NULL OR x.expires_at > now())
                    AND coalesce(array_position(skipped, x.task), 0) < 1 AND x.id <> ALL (picked)
                  ORDER BY x.priority, x.id
                  LIMIT least(wanted, coalesce(q.room, wanted))
                  FOR UPDATE SKIP LOCKED) x
              ORDER BY x.priority, x.id
              LIMIT wanted) c;
        EXIT WHEN c_ids IS NULL;
        -- No limited task among them (the usual case with a limit on something else): take all.
        IF NOT (c_tasks && known OR c_tasks && limited) THEN
            picked := picked || c_ids;
            EXIT;
        END IF;

        -- Limited tasks met for the first time: lock their rows, then ask how many may start.
        newly := ARRAY(SELECT DISTINCT u.t FROM unnest(c_tasks) u(t)
                       WHERE u.t = ANY (limited) AND u.t <> ALL (known) ORDER BY u.t);
        IF cardinality(newly) > 0 THEN
            IF pass = 1 THEN
                PERFORM 1 FROM canvas.rate_limits WHERE task = ANY (newly) ORDER BY task FOR UPDATE;
                PERFORM 1 FROM canvas.concurrency_limits
                WHERE scope = 'task' AND name = ANY (newly) ORDER BY name FOR UPDATE;
            END IF;
            FOREACH t IN ARRAY newly LOOP
                ok := true;
                IF pass > 1 THEN
                    -- Every limit row of the task, or none: compare those locked with those there.
                    WITH l AS (SELECT 1 FROM canvas.rate_limits WHERE task = t FOR UPDATE SKIP LOCKED),
                         m AS (SELECT 1 FROM canvas.concurrency_limits WHERE scope = 'task' AND name = t
                               FOR UPDATE SKIP LOCKED)
                    SELECT (SELECT count(*) FROM l) + (SELECT count(*) FROM m)
                           = (SELECT count(*) FROM canvas.rate_limits WHERE task = t)
                             + (SELECT count(*) FROM canvas.concurrency_limits WHERE scope = 'task' AND name = t)
                    INTO ok;
                END IF;
                known := known || t;
                room_left := room_left || CASE WHEN ok THEN coalesce(canvas.task_room(t, now_s), 2147483647) ELSE 0 END;
                taken := taken || 0;
            END LOOP;
        END IF;

        -- Keep the candidates in claim order while their task has room; pass over the rest.
        dropped := false;
        FOR i IN 1 .. cardinality(c_ids) LOOP
            t := c_tasks[i];
            k := array_position(known, t);
            IF k IS NOT NULL THEN
                IF room_left[k] <= 0 THEN
                    dropped := true;
                    IF t <> ALL (skipped) THEN
                        skipped := skipped || t;
                    END IF;
                    CONTINUE;
                END IF;
                room_left[k] := room_left[k] - 1;
                taken[k] := taken[k] + 1;
            END IF;
            picked := picked || c_ids[i];
            q := c_qis[i];
            rooms[q] := rooms[q] - 1;   -- NULL (no limit) stays NULL
        END LOOP;
        EXIT WHEN NOT dropped;
    END LOOP;

    -- The rate counters, under the locks taken above.
    IF cardinality(known) = 0 THEN
        RETURN picked;
    END IF;
    UPDATE canvas.rate_limits r SET
        started = CASE WHEN r.window_index = floor(now_s / r.per_seconds) THEN r.started ELSE 0 END + u.n,
        window_index = floor(now_s / r.per_seconds)
    FROM unnest(known, taken) u(task, n)
    WHERE r.task = u.task AND u.n > 0;
    RETURN picked;
END
$$;
