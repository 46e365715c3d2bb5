-- Canvases: group, chain, chord, starmap and error callbacks, expanded and advanced by SQL so the
-- rules are atomic and the same for every client. See docs/canvas.md.
--
-- A chord (and a group, which is a chord without a body) is a row in canvas.chords with a
-- `remaining` counter. Each member job carries the chord's id and its position. The transaction
-- that finishes a member decrements the counter; the one that takes it to zero enqueues the body
-- with the members' results in header order. It happens once, whatever crashes and retries do.

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
