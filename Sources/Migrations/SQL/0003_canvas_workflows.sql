-- Canvases: group, chain, chord, starmap and error callbacks, expanded and advanced by SQL so the
-- rules are atomic and the same for every client. See docs/canvas.md.
--
-- A chord (and a group, which is a chord without a body) is a row in canvas.chords with a
-- `remaining` counter. Each member job carries the chord's id and its position. The transaction
-- that finishes a member decrements the counter; the one that takes it to zero enqueues the body
-- with the members' results in header order. It happens once, whatever crashes and retries do.

ALTER TABLE canvas.jobs
    ADD COLUMN parent_id bigint,
    -- The chord or group this job reports to, and its slot there.
    ADD COLUMN chord_id  bigint,
    ADD COLUMN position  integer,
    -- Links still to run after this job succeeds (canvases, in order); NULL when none.
    ADD COLUMN chain     jsonb,
    -- A signature to enqueue if this job fails for good.
    ADD COLUMN on_error  jsonb;

CREATE INDEX jobs_chord_idx ON canvas.jobs (chord_id, position) WHERE chord_id IS NOT NULL;

-- Chord ids come from the jobs' sequence, so `voteradmin result ID` needs no prefix.
CREATE TABLE canvas.chords (
    id          bigint      PRIMARY KEY DEFAULT nextval(pg_get_serial_sequence('canvas.jobs', 'id')),
    kind        text        NOT NULL CHECK (kind IN ('group', 'chord', 'root')),
    size        integer     NOT NULL CHECK (size >= 0),
    remaining   integer     NOT NULL CHECK (remaining >= 0),
    state       text        NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'succeeded', 'failed', 'cancelled')),
    -- The canvas to run with the results; NULL for a group and for a root.
    body        jsonb,
    -- Where this chord reports when done: {"chain": […], "chord_id": …, "position": …, "on_error": …}.
    context     jsonb       NOT NULL DEFAULT '{}',
    on_error    jsonb,
    -- A group's (or root's) list of results once done.
    result      jsonb,
    error       text,
    body_id     bigint,
    parent_id   bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- Checks a canvas's shape and raises with the path of the first problem ("chord.body: missing
-- \"task\""), before anything is inserted.
CREATE FUNCTION canvas.validate_canvas(c jsonb, path text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    keys int;
    i int;
BEGIN
    IF c IS NULL OR jsonb_typeof(c) <> 'object' THEN
        RAISE EXCEPTION '%: expected an object with "task", "group", "chain", "chord" or "starmap"', path
            USING ERRCODE = '22023';
    END IF;
    keys := (c ? 'task')::int + (c ? 'group')::int + (c ? 'chain')::int + (c ? 'chord')::int + (c ? 'starmap')::int;
    IF keys = 0 THEN
        RAISE EXCEPTION '%: missing "task" (or "group", "chain", "chord", "starmap")', path USING ERRCODE = '22023';
    ELSIF keys > 1 THEN
        RAISE EXCEPTION '%: give only one of "task", "group", "chain", "chord", "starmap"', path USING ERRCODE = '22023';
    END IF;
    IF c ? 'on_error' THEN
        IF jsonb_typeof(c->'on_error') <> 'object' OR NOT (c->'on_error') ? 'task' THEN
            RAISE EXCEPTION '%.on_error: expected a signature with "task"', path USING ERRCODE = '22023';
        END IF;
        PERFORM canvas.validate_canvas(c->'on_error', path || '.on_error');
    END IF;
    IF c ? 'options' AND jsonb_typeof(c->'options') <> 'object' THEN
        RAISE EXCEPTION '%.options: expected an object', path USING ERRCODE = '22023';
    END IF;
    IF c ? 'options' THEN
        IF (c->'options') ? 'queue' AND (jsonb_typeof(c->'options'->'queue') <> 'string' OR c->'options'->>'queue' = '') THEN
            RAISE EXCEPTION '%.options.queue: expected a queue name', path USING ERRCODE = '22023';
        END IF;
        IF (c->'options') ? 'priority' AND jsonb_typeof(c->'options'->'priority') <> 'number' THEN
            RAISE EXCEPTION '%.options.priority: expected a number', path USING ERRCODE = '22023';
        END IF;
        IF (c->'options') ? 'countdown' AND (jsonb_typeof(c->'options'->'countdown') <> 'number'
            OR (c->'options'->>'countdown')::float8 < 0) THEN
            RAISE EXCEPTION '%.options.countdown: expected seconds, 0 or more', path USING ERRCODE = '22023';
        END IF;
        IF (c->'options') ? 'max_retries' AND (jsonb_typeof(c->'options'->'max_retries') <> 'number'
            OR (c->'options'->>'max_retries')::float8 < 0) THEN
            RAISE EXCEPTION '%.options.max_retries: expected a count, 0 or more', path USING ERRCODE = '22023';
        END IF;
        IF (c->'options') ? 'immutable' AND jsonb_typeof(c->'options'->'immutable') <> 'boolean' THEN
            RAISE EXCEPTION '%.options.immutable: expected true or false', path USING ERRCODE = '22023';
        END IF;
    END IF;
    IF c ? 'task' THEN
        IF jsonb_typeof(c->'task') <> 'string' OR c->>'task' = '' THEN
            RAISE EXCEPTION '%.task: expected a task name', path USING ERRCODE = '22023';
        END IF;
        IF c ? 'args' AND jsonb_typeof(c->'args') <> 'array' THEN
            RAISE EXCEPTION '%.args: expected a JSON array', path USING ERRCODE = '22023';
        END IF;
    ELSIF c ? 'starmap' THEN
        IF jsonb_typeof(c->'starmap') <> 'string' OR c->>'starmap' = '' THEN
            RAISE EXCEPTION '%.starmap: expected a task name', path USING ERRCODE = '22023';
        END IF;
        IF NOT c ? 'args' OR jsonb_typeof(c->'args') <> 'array' THEN
            RAISE EXCEPTION '%.args: expected an array of argument lists', path USING ERRCODE = '22023';
        END IF;
        FOR i IN 0 .. jsonb_array_length(c->'args') - 1 LOOP
            IF jsonb_typeof(c->'args'->i) <> 'array' THEN
                RAISE EXCEPTION '%.args[%]: expected an argument list (a JSON array)', path, i USING ERRCODE = '22023';
            END IF;
        END LOOP;
    ELSIF c ? 'chain' THEN
        IF jsonb_typeof(c->'chain') <> 'array' OR jsonb_array_length(c->'chain') = 0 THEN
            RAISE EXCEPTION '%.chain: expected a non-empty array of canvases', path USING ERRCODE = '22023';
        END IF;
        FOR i IN 0 .. jsonb_array_length(c->'chain') - 1 LOOP
            PERFORM canvas.validate_canvas(c->'chain'->i, format('%s.chain[%s]', path, i));
        END LOOP;
    ELSE
        DECLARE
            members jsonb := coalesce(c->'group', c->'chord');
            name text := CASE WHEN c ? 'group' THEN 'group' ELSE 'chord' END;
        BEGIN
            IF jsonb_typeof(members) <> 'array' THEN
                RAISE EXCEPTION '%.%: expected an array of canvases', path, name USING ERRCODE = '22023';
            END IF;
            -- Plain signatures are checked in one pass; only nested canvases recurse.
            IF EXISTS (SELECT 1 FROM jsonb_array_elements(members) m
                       WHERE jsonb_typeof(m) <> 'object' OR NOT (m ? 'task') OR m ? 'on_error' OR m ? 'options'
                          OR jsonb_typeof(m->'task') <> 'string' OR m->>'task' = ''
                          OR (m ? 'args' AND jsonb_typeof(m->'args') <> 'array')) THEN
                FOR i IN 0 .. jsonb_array_length(members) - 1 LOOP
                    PERFORM canvas.validate_canvas(members->i, format('%s.%s[%s]', path, name, i));
                END LOOP;
            END IF;
            IF name = 'chord' THEN
                IF NOT c ? 'body' THEN
                    RAISE EXCEPTION '%: a chord needs a "body"', path USING ERRCODE = '22023';
                END IF;
                PERFORM canvas.validate_canvas(c->'body', path || '.body');
            END IF;
        END;
    END IF;
END
$$;

-- Inserts one signature as a job. p_prepend (a JSON array) goes before its args unless the
-- signature is immutable: that is how a chain passes each result on.
CREATE FUNCTION canvas.insert_signature(
    s jsonb, p_chain jsonb, p_chord bigint, p_position integer, p_on_error jsonb, p_prepend jsonb, p_parent bigint
) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO canvas.jobs (task, args, queue, priority, run_at, max_attempts, retry_backoff, time_limit,
                             chain, chord_id, position, on_error, parent_id)
    VALUES (
        s->>'task',
        CASE WHEN p_prepend IS NOT NULL AND NOT coalesce((s->'options'->>'immutable')::boolean, false)
             THEN p_prepend || coalesce(s->'args', '[]') ELSE coalesce(s->'args', '[]') END,
        coalesce(s->'options'->>'queue', 'default'),
        coalesce((s->'options'->>'priority')::numeric::integer, 0),
        now() + coalesce((s->'options'->>'countdown')::float8, 0) * interval '1 second',
        coalesce((s->'options'->>'max_retries')::numeric::integer, 3) + 1,
        coalesce((s->'options'->>'retry_backoff')::float8, 1),
        (s->'options'->>'time_limit')::float8,
        nullif(p_chain, '[]'::jsonb), p_chord, p_position, coalesce(s->'on_error', p_on_error), p_parent)
    RETURNING id
$$;

-- Expands a (validated) canvas into jobs and chord rows. The context says what happens after it:
-- p_chain, links to run next with its result; p_chord/p_position, the slot it reports to;
-- p_on_error, the error callback it inherits; p_prepend, arguments to put first.
-- Returns the id of the job or chord row that stands for it.
CREATE FUNCTION canvas.expand(
    c jsonb, p_chain jsonb, p_chord bigint, p_position integer, p_on_error jsonb, p_prepend jsonb, p_parent bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    members jsonb;
    n integer;
    chord_id bigint;
    i integer;
BEGIN
    IF c ? 'task' THEN
        RETURN canvas.insert_signature(c, p_chain, p_chord, p_position, p_on_error, p_prepend, p_parent);
    ELSIF c ? 'starmap' THEN
        RETURN canvas.insert_signature(
            jsonb_build_object('task', 'canvas.starmap', 'args', jsonb_build_array(c->'starmap', c->'args'),
                               'options', coalesce(c->'options', '{}'), 'on_error', c->'on_error')
                - CASE WHEN c ? 'on_error' THEN '' ELSE 'on_error' END,
            p_chain, p_chord, p_position, p_on_error, p_prepend, p_parent);
    ELSIF c ? 'chain' THEN
        RETURN canvas.expand(c->'chain'->0, ((c->'chain') - 0) || coalesce(p_chain, '[]'), p_chord, p_position,
                             coalesce(c->'on_error', p_on_error), p_prepend, p_parent);
    END IF;

    members := coalesce(c->'group', c->'chord');
    n := jsonb_array_length(members);
    IF c ? 'group' AND coalesce(jsonb_array_length(p_chain), 0) > 0 THEN
        -- A group followed by more links is a chord whose body is the rest of the chain (Celery
        -- upgrades it the same way).
        RETURN canvas.expand(jsonb_build_object('chord', members, 'body', jsonb_build_object('chain', p_chain))
                                 || CASE WHEN c ? 'on_error' THEN jsonb_build_object('on_error', c->'on_error') ELSE '{}' END,
                             NULL, p_chord, p_position, p_on_error, p_prepend, p_parent);
    ELSIF c ? 'group' AND p_chord IS NOT NULL THEN
        -- A group inside a chord or group reports its list of results through an identity body.
        RETURN canvas.expand(jsonb_build_object('chord', members, 'body', '{"task": "canvas.identity"}'::jsonb)
                                 || CASE WHEN c ? 'on_error' THEN jsonb_build_object('on_error', c->'on_error') ELSE '{}' END,
                             NULL, p_chord, p_position, p_on_error, p_prepend, p_parent);
    END IF;

    INSERT INTO canvas.chords (kind, size, remaining, body, context, on_error, parent_id)
    VALUES (CASE WHEN c ? 'chord' THEN 'chord' ELSE 'group' END, n, n, c->'body',
            jsonb_strip_nulls(jsonb_build_object('chain', nullif(p_chain, '[]'::jsonb), 'chord_id', p_chord,
                                                 'position', p_position, 'on_error', p_on_error)),
            c->'on_error', p_parent)
    RETURNING id INTO chord_id;

    IF n = 0 THEN
        PERFORM canvas.complete_chord(chord_id);
    ELSIF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(members) m
                      WHERE NOT (m ? 'task') OR m ? 'on_error') THEN
        -- Every member a plain signature: one INSERT for all of them, however many.
        INSERT INTO canvas.jobs (task, args, queue, priority, run_at, max_attempts, retry_backoff, time_limit,
                                 chord_id, position, parent_id)
        SELECT m->>'task',
               CASE WHEN p_prepend IS NOT NULL AND NOT coalesce((m->'options'->>'immutable')::boolean, false)
                    THEN p_prepend || coalesce(m->'args', '[]') ELSE coalesce(m->'args', '[]') END,
               coalesce(m->'options'->>'queue', 'default'),
               coalesce((m->'options'->>'priority')::numeric::integer, 0),
               now() + coalesce((m->'options'->>'countdown')::float8, 0) * interval '1 second',
               coalesce((m->'options'->>'max_retries')::numeric::integer, 3) + 1,
               coalesce((m->'options'->>'retry_backoff')::float8, 1),
               (m->'options'->>'time_limit')::float8,
               chord_id, (k - 1)::integer, p_parent
        FROM jsonb_array_elements(members) WITH ORDINALITY AS e(m, k)
        ORDER BY k;
    ELSE
        FOR i IN 0 .. n - 1 LOOP
            PERFORM canvas.expand(members->i, NULL, chord_id, i, NULL, p_prepend, p_parent);
        END LOOP;
    END IF;
    RETURN chord_id;
END
$$;

-- Runs when a chord's counter reaches zero (or at once for an empty header): enqueues the body
-- with the results in header order, or, for a group or root, stores the list and reports it on.
CREATE FUNCTION canvas.complete_chord(p_chord bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ch canvas.chords;
    results jsonb;
    new_body bigint;
BEGIN
    UPDATE canvas.chords SET state = 'succeeded', finished_at = now()
    WHERE id = p_chord AND state = 'pending' RETURNING * INTO ch;
    IF NOT FOUND THEN
        RETURN;  -- failed or cancelled meanwhile: the body never runs
    END IF;
    SELECT coalesce(jsonb_agg(j.result ORDER BY j.position), '[]') INTO results
    FROM canvas.jobs j WHERE j.chord_id = p_chord AND j.chain IS NULL AND j.state = 'succeeded';
    IF ch.body IS NOT NULL THEN
        new_body := canvas.expand(ch.body, ch.context->'chain', (ch.context->>'chord_id')::bigint,
                                 (ch.context->>'position')::integer, ch.context->'on_error',
                                 jsonb_build_array(results), ch.parent_id);
        UPDATE canvas.chords SET body_id = new_body WHERE id = p_chord;
    ELSE
        UPDATE canvas.chords SET result = results WHERE id = p_chord;
        IF ch.context ? 'chord_id' THEN
            -- A root or group in a slot: report the list as if a job had returned it.
            PERFORM canvas.report_success((ch.context->>'chord_id')::bigint, 1);
        END IF;
    END IF;
END
$$;

-- Counts `k` members of a chord as done; the call that reaches zero completes it.
CREATE FUNCTION canvas.report_success(p_chord bigint, k integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    left_over integer;
BEGIN
    UPDATE canvas.chords SET remaining = remaining - k WHERE id = p_chord AND state = 'pending'
    RETURNING remaining INTO left_over;
    IF left_over = 0 THEN
        PERFORM canvas.complete_chord(p_chord);
    END IF;
END
$$;

-- A member failed for good: the chord fails once, its error callback runs once, the body never
-- runs, and the failure travels up to whatever the chord reports to.
CREATE FUNCTION canvas.fail_chord(p_chord bigint, info jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ch canvas.chords;
BEGIN
    UPDATE canvas.chords SET state = 'failed', error = info->>'error', finished_at = now()
    WHERE id = p_chord AND state = 'pending' RETURNING * INTO ch;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF ch.on_error IS NOT NULL THEN
        PERFORM canvas.insert_signature(ch.on_error, NULL, NULL, NULL, NULL, jsonb_build_array(info), ch.parent_id);
    END IF;
    IF ch.context ? 'on_error' AND ch.context->'on_error' IS DISTINCT FROM ch.on_error THEN
        PERFORM canvas.insert_signature(ch.context->'on_error', NULL, NULL, NULL, NULL, jsonb_build_array(info),
                                        ch.parent_id);
    END IF;
    IF ch.context ? 'chord_id' THEN
        PERFORM canvas.fail_chord((ch.context->>'chord_id')::bigint, info);
    END IF;
END
$$;

-- SELECT canvas.enqueue_canvas('{"chord": [{"task": "canvas.add", "args": [1, 2]}], "body": {"task": "canvas.sum"}}');
-- Validates, then expands the canvas inside a root (a one-slot group) whose row tells when the
-- whole canvas is done and what it returned. Returns the root's id.
CREATE FUNCTION canvas.enqueue_canvas(c jsonb, p_parent bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    root bigint;
BEGIN
    PERFORM canvas.validate_canvas(c, CASE
        WHEN c ? 'group' THEN 'group' WHEN c ? 'chain' THEN 'chain' WHEN c ? 'chord' THEN 'chord'
        WHEN c ? 'starmap' THEN 'starmap' ELSE 'canvas' END);
    INSERT INTO canvas.chords (kind, size, remaining, parent_id) VALUES ('root', 1, 1, p_parent) RETURNING id INTO root;
    PERFORM canvas.expand(c, NULL, root, 0, NULL, NULL, p_parent);
    RETURN root;
END
$$;

-- One run as canvas.finish saw it, for the follow-ups (chains, chords, callbacks, spawned work).
CREATE TYPE canvas.finished_run AS (
    id bigint, state text, retry_in double precision, chain jsonb, chord_id bigint, position integer,
    on_error jsonb, result jsonb, task text, error text, spawn jsonb
);

DROP FUNCTION canvas.finish_and_claim(bigint, bigint[], integer[], text[], jsonb[], text[], text[], integer);
DROP FUNCTION canvas.finish(bigint, bigint[], integer[], text[], jsonb[], text[]);

-- Records how a batch of runs ended, in one transaction, and carries out what follows from it:
-- the next link of a chain, a chord's counter, error callbacks, and the canvases a task spawned
-- (committed with its success, so a task that crashes and is retried leaves no duplicate).
--   outcome 'succeeded': result holds the task's return value, spawn a JSON array of canvases;
--   'error' or 'timeout': retried with exponential backoff while attempts remain, else failed;
--   'fatal': failed at once (unknown task, malformed arguments);
--   'crashed': the pool process died; retried at once until canvas.max_crashes().
-- The fence is (worker, attempt, not finished). It deliberately does not say state = 'running':
-- that would let the planner drive the join from jobs_running_idx, whose entries for every job
-- the worker already finished stay until VACUUM, making each batch slower than the last.
-- Returns each run it recorded with the job's new state and, for a retry, the seconds until it;
-- runs that were no longer this worker's are left out.
CREATE FUNCTION canvas.finish(
    p_worker bigint, p_ids bigint[], p_attempts integer[], p_outcomes text[], p_results jsonb[], p_errors text[],
    p_spawns jsonb[]
) RETURNS TABLE (id bigint, state text, retry_in double precision) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    done canvas.finished_run[];
    r canvas.finished_run;
    g record;
    info jsonb;
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
                j.retry_backoff * power(2, greatest(j.attempt - j.crashes - 1, 0)) AS backoff
            FROM canvas.jobs j JOIN input i ON i.id = j.id
            WHERE j.worker_id = p_worker AND j.attempt = i.attempt AND j.finished_at IS NULL
        ), updated AS (
            -- The fence is repeated here so that a row changed since `decided` read it is rechecked.
            UPDATE canvas.jobs j SET
                state = CASE d.verdict WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed' ELSE 'queued' END,
                result = CASE WHEN d.verdict = 'succeeded' THEN d.result ELSE j.result END,
                error = CASE
                    WHEN d.verdict = 'succeeded' THEN NULL
                    WHEN d.outcome = 'crashed' AND d.verdict = 'failed' THEN
                        format('the pool process died %s times running this job (%s); not retrying it again',
                               j.crashes + 1, d.error)
                    ELSE d.error END,
                crashes = j.crashes + (d.outcome = 'crashed')::integer,
                run_at = CASE d.verdict
                    WHEN 'retry' THEN now() + least(d.backoff, 3600) * (0.9 + random() * 0.2) * interval '1 second'
                    WHEN 'requeue' THEN now()
                    ELSE j.run_at END,
                worker_id = CASE WHEN d.verdict IN ('retry', 'requeue') THEN NULL ELSE j.worker_id END,
                finished_at = CASE WHEN d.verdict IN ('succeeded', 'failed') THEN now() ELSE NULL END
            FROM decided d
            WHERE j.id = d.id AND j.worker_id = p_worker AND j.attempt = d.attempt AND j.finished_at IS NULL
            RETURNING j.id, j.state, j.queue, j.run_at, j.chain, j.chord_id, j.position, j.on_error, j.result,
                      j.task, j.error, d.spawn
        ), woken AS (
            SELECT pg_notify('canvas_jobs', u.queue) FROM updated u
            WHERE u.state = 'queued' AND u.run_at <= now() GROUP BY u.queue
        )
        SELECT array_agg(ROW(u.id, u.state, CASE WHEN u.state = 'queued'
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
        -- Spawned canvases first: one that is malformed fails its task instead of the batch.
        FOR i IN 1 .. cardinality(done) LOOP
            r := done[i];
            CONTINUE WHEN r.state <> 'succeeded' OR r.spawn IS NULL OR jsonb_array_length(r.spawn) = 0;
            BEGIN
                FOR s IN SELECT value FROM jsonb_array_elements(r.spawn) LOOP
                    PERFORM canvas.enqueue_canvas(s, r.id);
                END LOOP;
            EXCEPTION WHEN invalid_parameter_value THEN
                UPDATE canvas.jobs SET state = 'failed', result = NULL,
                    error = 'the task spawned an invalid canvas: ' || SQLERRM
                WHERE canvas.jobs.id = r.id;
                done[i].state := 'failed';
                done[i].error := 'the task spawned an invalid canvas: ' || SQLERRM;
            END;
        END LOOP;

        FOR r IN SELECT * FROM unnest(done) d WHERE d.state = 'succeeded' AND d.chain IS NOT NULL LOOP
            PERFORM canvas.expand(r.chain->0, r.chain - 0, r.chord_id, r.position, r.on_error,
                                  jsonb_build_array(r.result), r.id);
        END LOOP;

        -- One counter update per chord per batch, in id order so concurrent batches cannot deadlock.
        FOR g IN SELECT d.chord_id AS chord_id, count(*)::integer AS k FROM unnest(done) d
                 WHERE d.state = 'succeeded' AND d.chain IS NULL AND d.chord_id IS NOT NULL
                 GROUP BY d.chord_id ORDER BY d.chord_id LOOP
            PERFORM canvas.report_success(g.chord_id, g.k);
        END LOOP;

        FOR r IN SELECT * FROM unnest(done) d WHERE d.state = 'failed' ORDER BY d.chord_id, d.id LOOP
            info := jsonb_build_object('id', r.id, 'task', r.task, 'error', r.error);
            IF r.on_error IS NOT NULL THEN
                PERFORM canvas.insert_signature(r.on_error, NULL, NULL, NULL, NULL, jsonb_build_array(info), r.id);
            END IF;
            IF r.chord_id IS NOT NULL THEN
                PERFORM canvas.fail_chord(r.chord_id, info);
            END IF;
        END LOOP;
    END IF;

    RETURN QUERY SELECT d.id, d.state, d.retry_in FROM unnest(done) d;
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

-- Finished jobs are pruned only once nothing needs their results: a member of a chord or group
-- stays until that chord or group is done.
CREATE OR REPLACE FUNCTION canvas.prune(p_age interval, p_limit integer DEFAULT 10000)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM canvas.jobs WHERE id = ANY (ARRAY(
        SELECT j.id FROM canvas.jobs j
        WHERE j.state IN ('succeeded', 'failed', 'cancelled') AND j.finished_at < now() - p_age
          AND (j.chord_id IS NULL OR NOT EXISTS (
              SELECT 1 FROM canvas.chords c WHERE c.id = j.chord_id AND c.state = 'pending'))
        ORDER BY j.finished_at LIMIT p_limit));
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM canvas.chords c
    WHERE c.state <> 'pending' AND c.finished_at < now() - p_age
      AND NOT EXISTS (SELECT 1 FROM canvas.jobs j WHERE j.chord_id = c.id);
    RETURN n;
END
$$;
