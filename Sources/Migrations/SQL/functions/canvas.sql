-- Canvases: group, chain, chord, starmap and error callbacks, expanded and advanced by SQL so the
-- rules are atomic and the same for every client. See docs/canvas.md.
--
-- A chord (and a group, which is a chord without a body) is a row in canvas.chords with a
-- `remaining` counter. Each member job carries the chord's id and its position. The transaction
-- that finishes a member decrements the counter; the one that takes it to zero enqueues the body
-- with the members' results in header order. It happens once, whatever crashes and retries do.
--
-- Error callbacks are lists. A job's `on_error` holds every callback to run if it fails for good:
-- its own and those it inherits (its chain's, its chord's for a body). A chord's holds those to
-- run if its header fails: its own, its body's own, and those it inherits. The links still to run
-- in a chain carry their full lists with them, so nothing leaks from one link to the next.
--
-- Lock order (docs/broker.md): job rows first, in ascending id order; then the roots of the
-- canvases concerned, in ascending id order (canvas.lock_roots); only then any chord row; last,
-- the advisory locks of unique keys, ascending (canvas.lock_unique_keys); canvas.retry alone takes
-- one before everything, the pruner's (canvas.prune_lock_id). Every change to a
-- canvas's chords holds its root's lock, so two transactions never wait on each other inside one
-- canvas.

-- The most bytes a job's arguments or result, or a chord's gathered results, may take. Set it
-- per database or role: ALTER DATABASE … SET pgcanvas.max_payload_bytes = '1048576'.
CREATE FUNCTION canvas.max_payload_bytes() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('pgcanvas.max_payload_bytes', true), '')::bigint, 8388608)
$$;

-- A list of error callbacks from a stored or declared value: one signature, a list, or nothing.
CREATE FUNCTION canvas.as_list(v jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(v) WHEN 'array' THEN v WHEN 'object' THEN jsonb_build_array(v) ELSE '[]'::jsonb END
$$;

-- Where a problem is, for messages: '' at the top, else 'chain[1].' and so on.
CREATE FUNCTION canvas.path_name(p text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(nullif(rtrim(p, '.'), ''), 'canvas')
$$;

-- The one rule for task and queue names: 1 to 200 characters, no control characters. False,
-- never NULL, for a missing value.
CREATE FUNCTION canvas.is_name(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_typeof(v) = 'string' AND char_length(v #>> '{}') BETWEEN 1 AND 200
                    AND (v #>> '{}') !~ '[\u0001-\u001f\u007f-\u009f]', false)
$$;

-- Seconds an option may hold: a number within [lo, hi] that a double precision can hold too
-- (1e-400 is a fine numeric but not a float8, and would fail only later, when a job is made).
CREATE FUNCTION canvas.is_seconds(v jsonb, lo numeric, hi numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_typeof(v) = 'number' AND (v #>> '{}')::numeric BETWEEN lo AND hi
                    AND ((v #>> '{}')::numeric = 0 OR abs((v #>> '{}')::numeric) >= 1e-6), false)
$$;

-- Every option a signature may carry (docs/canvas.md, docs/celery.md).
CREATE FUNCTION canvas.option_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['queue', 'priority', 'countdown', 'eta', 'expires', 'max_retries', 'retry_backoff', 'time_limit',
                 'soft_time_limit', 'immutable', 'ignore_result', 'unique_key', 'unique_for']
$$;

-- A time as options spell it (ISO 8601 with a zone), no later than ten years from now.
CREATE FUNCTION canvas.is_time(v jsonb) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF jsonb_typeof(v) <> 'string'
       OR (v #>> '{}') !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$' THEN
        RETURN false;
    END IF;
    RETURN (v #>> '{}')::timestamptz <= now() + interval '315360000 seconds';
EXCEPTION WHEN data_exception THEN
    RETURN false;
END
$$;

-- Checks callbacks ("on_error", "link_error", "link" under key `k`): one or a list. Error callbacks
-- must be signatures (they receive the failure's details); success callbacks may be any canvas.
CREATE FUNCTION canvas.validate_callbacks(v jsonb, p text, k text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i int;
    want text := CASE WHEN k = 'link' THEN 'a signature or canvas' ELSE 'a signature with "task"' END;
BEGIN
    IF jsonb_typeof(v) = 'object' THEN
        IF k <> 'link' AND NOT v ? 'task' THEN
            RAISE EXCEPTION '%', format('%s%s: expected %s', p, k, want) USING ERRCODE = '22023';
        END IF;
        PERFORM canvas.validate_canvas(v, p || k || '.');
    ELSIF jsonb_typeof(v) = 'array' THEN
        FOR i IN 0 .. jsonb_array_length(v) - 1 LOOP
            IF jsonb_typeof(v->i) <> 'object' OR (k <> 'link' AND NOT (v->i) ? 'task') THEN
                RAISE EXCEPTION '%', format('%s%s[%s]: expected %s', p, k, i, want) USING ERRCODE = '22023';
            END IF;
            PERFORM canvas.validate_canvas(v->i, format('%s%s[%s].', p, k, i));
        END LOOP;
    ELSE
        RAISE EXCEPTION '%', format('%s%s: expected %s, or a list of them', p, k, want) USING ERRCODE = '22023';
    END IF;
END
$$;

-- A canvas's error callbacks: "on_error" (one or a list) and "link_error" (Celery's spelling).
CREATE FUNCTION canvas.errbacks(c jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT canvas.as_list(c->'on_error') || canvas.as_list(c->'link_error')
$$;

-- Checks a signature's options against the rules every client shares (Swift's Validation.swift
-- states the same bounds and messages).
CREATE FUNCTION canvas.validate_options(o jsonb, p text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    k text;
    n numeric;
BEGIN
    IF jsonb_typeof(o) <> 'object' THEN
        RAISE EXCEPTION '%options: expected an object', p USING ERRCODE = '22023';
    END IF;
    -- One jsonb operation in the common case; the keys are listed only to name an unknown one.
    IF (o - canvas.option_names()) <> '{}'::jsonb THEN
        k := (SELECT min(x) FROM jsonb_object_keys(o - canvas.option_names()) x);
        RAISE EXCEPTION '%options: unknown option "%"', p, k USING ERRCODE = '22023';
    END IF;
    IF o ? 'queue' AND NOT canvas.is_name(o->'queue') THEN
        RAISE EXCEPTION '%options.queue: expected a queue name (1 to 200 characters, no control characters)', p
            USING ERRCODE = '22023';
    END IF;
    IF o ? 'priority' AND (jsonb_typeof(o->'priority') <> 'number' OR (o->>'priority')::numeric NOT BETWEEN -32768 AND 32767
                           OR (o->>'priority')::numeric <> trunc((o->>'priority')::numeric)) THEN
        RAISE EXCEPTION '%options.priority: expected an integer from -32768 to 32767', p USING ERRCODE = '22023';
    END IF;
    IF o ? 'max_retries' AND (jsonb_typeof(o->'max_retries') <> 'number'
                              OR (o->>'max_retries')::numeric NOT BETWEEN 0 AND 1000
                              OR (o->>'max_retries')::numeric <> trunc((o->>'max_retries')::numeric)) THEN
        RAISE EXCEPTION '%options.max_retries: expected an integer from 0 to 1000', p USING ERRCODE = '22023';
    END IF;
    IF o ? 'countdown' AND NOT canvas.is_seconds(o->'countdown', 0, 315360000) THEN
        RAISE EXCEPTION '%options.countdown: expected seconds from 0 to 315360000', p USING ERRCODE = '22023';
    END IF;
    IF o ? 'eta' THEN
        IF jsonb_typeof(o->'eta') <> 'string' OR (o->>'eta') !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$' THEN
            RAISE EXCEPTION '%options.eta: expected a time (ISO 8601, with a time zone) within 10 years', p
                USING ERRCODE = '22023';
        END IF;
        IF NOT canvas.is_time(o->'eta') THEN
            RAISE EXCEPTION '%options.eta: expected a time within 10 years', p USING ERRCODE = '22023';
        END IF;
    END IF;
    IF o ? 'time_limit' AND (NOT canvas.is_seconds(o->'time_limit', 0, 31536000)
                             OR (o->>'time_limit')::numeric = 0) THEN
        RAISE EXCEPTION '%options.time_limit: expected seconds, more than 0 and at most 31536000', p
            USING ERRCODE = '22023';
    END IF;
    IF o ? 'soft_time_limit' THEN
        IF NOT canvas.is_seconds(o->'soft_time_limit', 0, 31536000) OR (o->>'soft_time_limit')::numeric = 0 THEN
            RAISE EXCEPTION '%options.soft_time_limit: expected seconds, more than 0 and at most 31536000', p
                USING ERRCODE = '22023';
        END IF;
        IF o ? 'time_limit' AND (o->>'soft_time_limit')::numeric >= (o->>'time_limit')::numeric THEN
            RAISE EXCEPTION '%options.soft_time_limit: expected less than options.time_limit', p
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF o ? 'retry_backoff' AND NOT canvas.is_seconds(o->'retry_backoff', 0, 86400) THEN
        RAISE EXCEPTION '%options.retry_backoff: expected seconds from 0 to 86400', p USING ERRCODE = '22023';
    END IF;
    IF o ? 'immutable' AND jsonb_typeof(o->'immutable') <> 'boolean' THEN
        RAISE EXCEPTION '%options.immutable: expected true or false', p USING ERRCODE = '22023';
    END IF;
    IF o ? 'ignore_result' AND jsonb_typeof(o->'ignore_result') <> 'boolean' THEN
        RAISE EXCEPTION '%options.ignore_result: expected true or false', p USING ERRCODE = '22023';
    END IF;
    IF o ? 'expires' THEN
        IF jsonb_typeof(o->'expires') = 'number' THEN
            IF NOT canvas.is_seconds(o->'expires', 0, 315360000) THEN
                RAISE EXCEPTION '%options.expires: expected seconds from 0 to 315360000, or a time', p
                    USING ERRCODE = '22023';
            END IF;
        ELSIF NOT canvas.is_time(o->'expires') THEN
            RAISE EXCEPTION '%options.expires: expected seconds from 0 to 315360000, or a time (ISO 8601, with a time zone) within 10 years', p
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF o ? 'unique_key' THEN
        IF NOT canvas.is_name(o->'unique_key') THEN
            RAISE EXCEPTION '%options.unique_key: expected a key (1 to 200 characters, no control characters)', p
                USING ERRCODE = '22023';
        END IF;
        -- Inside a canvas a duplicate would leave its chord or chain waiting for a job that is not
        -- its own: uniqueness belongs to what is enqueued on its own.
        IF p <> '' THEN
            RAISE EXCEPTION '%options.unique_key: only for a signature enqueued on its own, not inside a canvas', p
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF o ? 'unique_for' THEN
        IF NOT canvas.is_seconds(o->'unique_for', 0, 315360000) THEN
            RAISE EXCEPTION '%options.unique_for: expected seconds from 0 to 315360000', p USING ERRCODE = '22023';
        END IF;
        IF NOT o ? 'unique_key' THEN
            RAISE EXCEPTION '%options.unique_for: needs a unique_key', p USING ERRCODE = '22023';
        END IF;
    END IF;
END
$$;

-- Checks a canvas's shape and values and raises with the path of the first problem
-- ("chain[1].options.time_limit: …"), before anything is inserted. `p` is '' at the top.
CREATE FUNCTION canvas.validate_canvas(c jsonb, p text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    allowed text[];
    k text;
    i int;
    members jsonb;
    common_task jsonb;
    lim bigint := canvas.max_payload_bytes();
    -- A canvas smaller than the bound cannot hold arguments larger than it: no need to measure
    -- each. (A compressed value's size says nothing of what it holds.)
    small boolean := pg_column_compression(c) IS NULL AND pg_column_size(c) <= lim;
BEGIN
    IF c IS NULL OR jsonb_typeof(c) <> 'object' THEN
        RAISE EXCEPTION '%: expected an object with "task", "group", "chain", "chord" or "starmap"', canvas.path_name(p)
            USING ERRCODE = '22023';
    END IF;
    IF (c ? 'task')::int + (c ? 'group')::int + (c ? 'chain')::int + (c ? 'chord')::int + (c ? 'starmap')::int > 1 THEN
        RAISE EXCEPTION '%: give only one of "task", "group", "chain", "chord", "starmap"', canvas.path_name(p)
            USING ERRCODE = '22023';
    END IF;
    kind := CASE WHEN c ? 'task' THEN 'task' WHEN c ? 'group' THEN 'group' WHEN c ? 'chain' THEN 'chain'
                 WHEN c ? 'chord' THEN 'chord' WHEN c ? 'starmap' THEN 'starmap' END;
    IF kind IS NULL THEN
        RAISE EXCEPTION '%: missing "task" (or "group", "chain", "chord", "starmap")', canvas.path_name(p)
            USING ERRCODE = '22023';
    END IF;
    allowed := CASE kind
        WHEN 'task' THEN ARRAY['task', 'args', 'kwargs', 'options', 'link', 'link_error', 'on_error']
        WHEN 'starmap' THEN ARRAY['starmap', 'args', 'options', 'link', 'link_error', 'on_error']
        WHEN 'chord' THEN ARRAY['chord', 'body', 'link', 'link_error', 'on_error']
        ELSE ARRAY[kind, 'link', 'link_error', 'on_error'] END;
    IF (c - allowed) <> '{}'::jsonb THEN
        k := (SELECT min(x) FROM jsonb_object_keys(c - allowed) x);
        RAISE EXCEPTION '%: unknown key "%" for a %', canvas.path_name(p), k,
            CASE kind WHEN 'task' THEN 'signature' ELSE kind END USING ERRCODE = '22023';
    END IF;
    FOREACH k IN ARRAY ARRAY['on_error', 'link_error', 'link'] LOOP
        IF c ? k THEN
            PERFORM canvas.validate_callbacks(c->k, p, k);
        END IF;
    END LOOP;
    IF c ? 'options' THEN
        PERFORM canvas.validate_options(c->'options', p);
    END IF;

    IF kind = 'task' THEN
        IF NOT canvas.is_name(c->'task') THEN
            RAISE EXCEPTION '%task: expected a task name (1 to 200 characters, no control characters)', p
                USING ERRCODE = '22023';
        END IF;
        IF c ? 'args' AND jsonb_typeof(c->'args') <> 'array' THEN
            RAISE EXCEPTION '%args: expected a JSON array', p USING ERRCODE = '22023';
        END IF;
        IF c ? 'args' AND NOT small AND pg_column_size(c->'args') > lim THEN
            RAISE EXCEPTION '%args: too large (% bytes; the limit is %, pgcanvas.max_payload_bytes)', p,
                pg_column_size(c->'args'), lim USING ERRCODE = '22023';
        END IF;
        IF c ? 'kwargs' AND jsonb_typeof(c->'kwargs') <> 'object' THEN
            RAISE EXCEPTION '%kwargs: expected a JSON object of keyword arguments', p USING ERRCODE = '22023';
        END IF;
        IF c ? 'kwargs' AND NOT small AND pg_column_size(c->'kwargs') > lim THEN
            RAISE EXCEPTION '%kwargs: too large (% bytes; the limit is %, pgcanvas.max_payload_bytes)', p,
                pg_column_size(c->'kwargs'), lim USING ERRCODE = '22023';
        END IF;
    ELSIF kind = 'starmap' THEN
        IF NOT canvas.is_name(c->'starmap') THEN
            RAISE EXCEPTION '%starmap: expected a task name (1 to 200 characters, no control characters)', p
                USING ERRCODE = '22023';
        END IF;
        IF NOT c ? 'args' OR jsonb_typeof(c->'args') <> 'array' THEN
            RAISE EXCEPTION '%args: expected an array of argument lists', p USING ERRCODE = '22023';
        END IF;
        FOR i IN 0 .. jsonb_array_length(c->'args') - 1 LOOP
            IF jsonb_typeof(c->'args'->i) <> 'array' THEN
                RAISE EXCEPTION '%args[%]: expected an argument list (a JSON array)', p, i USING ERRCODE = '22023';
            END IF;
        END LOOP;
        IF NOT small AND pg_column_size(c->'args') > lim THEN
            RAISE EXCEPTION '%args: too large (% bytes; the limit is %, pgcanvas.max_payload_bytes)', p,
                pg_column_size(c->'args'), lim USING ERRCODE = '22023';
        END IF;
    ELSIF kind = 'chain' THEN
        IF jsonb_typeof(c->'chain') <> 'array' OR jsonb_array_length(c->'chain') = 0 THEN
            RAISE EXCEPTION '%chain: expected a non-empty array of canvases', p USING ERRCODE = '22023';
        END IF;
        FOR i IN 0 .. jsonb_array_length(c->'chain') - 1 LOOP
            PERFORM canvas.validate_canvas(c->'chain'->i, format('%schain[%s].', p, i));
        END LOOP;
    ELSE
        members := c->kind;
        IF jsonb_typeof(members) <> 'array' THEN
            RAISE EXCEPTION '%: expected an array of canvases', p || kind USING ERRCODE = '22023';
        END IF;
        -- Plain signatures (a task name and arguments) are checked in one pass; a member with
        -- anything more is checked on its own, which also finds the first problem's path. A
        -- large header mostly repeats one task name: the first member's, once it is checked, is
        -- not checked again for every member.
        common_task := CASE WHEN canvas.is_name(members->0->'task') THEN members->0->'task' END;
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(members) m
                   WHERE jsonb_typeof(m) <> 'object' OR (m - 'task' - 'args') <> '{}'::jsonb
                      OR (NOT coalesce(m->'task' = common_task, false) AND NOT canvas.is_name(m->'task'))
                      OR (m ? 'args' AND (jsonb_typeof(m->'args') <> 'array'
                                          OR (NOT small AND pg_column_size(m->'args') > lim)))) THEN
            FOR i IN 0 .. jsonb_array_length(members) - 1 LOOP
                PERFORM canvas.validate_canvas(members->i, format('%s%s[%s].', p, kind, i));
            END LOOP;
        END IF;
        IF kind = 'chord' THEN
            IF NOT c ? 'body' THEN
                RAISE EXCEPTION '%: a chord needs a "body"', canvas.path_name(p) USING ERRCODE = '22023';
            END IF;
            PERFORM canvas.validate_canvas(c->'body', p || 'body.');
        END IF;
    END IF;
END
$$;

-- The roots of the canvases these chords belong to, locked in ascending id order. Every change to
-- a canvas's chords happens under its root's lock, after any job rows (see the top of this file).
CREATE FUNCTION canvas.lock_roots(p_chords bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_chords IS NULL OR cardinality(p_chords) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM canvas.chords r
    WHERE r.id IN (
        WITH RECURSIVE up(id, slot) AS (
            SELECT c.id, (c.context->>'chord_id')::bigint FROM canvas.chords c WHERE c.id = ANY (p_chords)
            UNION
            SELECT c.id, (c.context->>'chord_id')::bigint FROM canvas.chords c JOIN up ON c.id = up.slot
        )
        SELECT up.id FROM up WHERE up.slot IS NULL)
    ORDER BY r.id
    FOR NO KEY UPDATE;
END
$$;

-- The job columns a (validated) signature stands for: its options with their defaults, and its
-- arguments with p_prepend (a JSON array) put first unless it is immutable, which is how a chain
-- passes each result on. The one place where options become columns; a single SELECT, so the
-- planner inlines it into the INSERTs below, the 100,000-row one included.
CREATE FUNCTION canvas.job_fields(s jsonb, p_prepend jsonb)
RETURNS TABLE (task text, args jsonb, kwargs jsonb, queue text, priority integer, run_at timestamptz,
               max_attempts integer, retry_backoff double precision, time_limit double precision,
               soft_time_limit double precision, expires_at timestamptz, ignore_result boolean, unique_key text,
               unique_for double precision)
LANGUAGE sql STABLE AS $$
    SELECT s->>'task',
           CASE WHEN p_prepend IS NOT NULL AND NOT coalesce((s->'options'->>'immutable')::boolean, false)
                THEN p_prepend || coalesce(s->'args', '[]') ELSE coalesce(s->'args', '[]') END,
           nullif(s->'kwargs', '{}'::jsonb),
           coalesce(s->'options'->>'queue', 'default'),
           coalesce((s->'options'->>'priority')::numeric::integer, 0),
           coalesce((s->'options'->>'eta')::timestamptz,
                    now() + coalesce((s->'options'->>'countdown')::float8, 0) * interval '1 second'),
           coalesce((s->'options'->>'max_retries')::numeric::integer, 3) + 1,
           coalesce((s->'options'->>'retry_backoff')::float8, 1),
           (s->'options'->>'time_limit')::float8,
           (s->'options'->>'soft_time_limit')::float8,
           CASE jsonb_typeof(s->'options'->'expires')
               WHEN 'number' THEN now() + (s->'options'->>'expires')::float8 * interval '1 second'
               WHEN 'string' THEN (s->'options'->>'expires')::timestamptz END,
           coalesce((s->'options'->>'ignore_result')::boolean, false),
           s->'options'->>'unique_key',
           (s->'options'->>'unique_for')::float8
$$;

-- Inserts one signature as a job, with where it stands in its canvas and the error callbacks it
-- inherits (run after its own).
CREATE FUNCTION canvas.insert_signature(
    s jsonb, p_chain jsonb, p_chord bigint, p_position integer, p_on_error jsonb, p_prepend jsonb, p_parent bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    -- PL/pgSQL, so the INSERT is planned once a session rather than once a call.
    INSERT INTO canvas.jobs (task, args, kwargs, queue, priority, run_at, max_attempts, retry_backoff, time_limit,
                             soft_time_limit, expires_at, ignore_result, unique_key, unique_for,
                             chain, chord_id, position, on_error, link, parent_id)
    SELECT f.*, nullif(p_chain, '[]'::jsonb), p_chord, p_position,
           nullif(canvas.errbacks(s) || canvas.as_list(p_on_error), '[]'::jsonb),
           nullif(canvas.as_list(s->'link'), '[]'::jsonb), p_parent
    FROM canvas.job_fields(s, p_prepend) f
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Expands a (validated) canvas into jobs and chord rows. The context says what happens after it:
-- p_chain, links to run next with its result (each carrying its own error callbacks);
-- p_chord/p_position, the slot it reports to; p_on_error, the error callbacks it inherits;
-- p_prepend, arguments to put first. Returns the id of the job or chord row that stands for it.
-- Success callbacks ("link") go where the canvas's result is made: a chain's to its last link, a
-- chord's to its body, a group's to the group's row (run with its list of results).
CREATE FUNCTION canvas.expand(
    c jsonb, p_chain jsonb, p_chord bigint, p_position integer, p_on_error jsonb, p_prepend jsonb, p_parent bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    members jsonb;
    n integer;
    chord_id bigint;
    inherited jsonb;
    links jsonb;
    last_link jsonb;
    first_link jsonb;
    group_links jsonb;
BEGIN
    IF c ? 'task' THEN
        RETURN canvas.insert_signature(c, p_chain, p_chord, p_position, p_on_error, p_prepend, p_parent);
    ELSIF c ? 'starmap' THEN
        -- Immutable: its argument lists are its own; a previous link's result is not one of them.
        RETURN canvas.insert_signature(
            jsonb_strip_nulls(jsonb_build_object(
                'task', 'canvas.starmap', 'args', jsonb_build_array(c->'starmap', c->'args'),
                'options', coalesce(c->'options', '{}') || '{"immutable": true}',
                'on_error', canvas.errbacks(c), 'link', c->'link')),
            p_chain, p_chord, p_position, p_on_error, p_prepend, p_parent);
    ELSIF c ? 'chain' THEN
        links := c->'chain';
        IF c ? 'link' THEN
            last_link := links->-1;
            links := jsonb_set(links, ARRAY[(jsonb_array_length(links) - 1)::text],
                               last_link || jsonb_build_object('link', canvas.as_list(last_link->'link')
                                                                       || canvas.as_list(c->'link')));
        END IF;
        -- Every link runs the chain's callbacks after its own; the links still to run carry theirs.
        inherited := canvas.errbacks(c) || canvas.as_list(p_on_error);
        first_link := links->0;
        SELECT coalesce(jsonb_agg((l.link - 'link_error') || jsonb_build_object('on_error', canvas.errbacks(l.link) || inherited)
                                  ORDER BY l.k), '[]')
        INTO links FROM jsonb_array_elements(links - 0) WITH ORDINALITY AS l(link, k);
        RETURN canvas.expand(first_link, links || coalesce(p_chain, '[]'), p_chord, p_position, inherited, p_prepend,
                             p_parent);
    END IF;

    members := coalesce(c->'group', c->'chord');
    n := jsonb_array_length(members);
    -- A group's success callbacks get its list of results, whatever it turns into below.
    group_links := CASE WHEN c ? 'group' THEN canvas.as_list(c->'link') ELSE canvas.as_list(c->'group_link') END;
    IF c ? 'group' AND coalesce(jsonb_array_length(p_chain), 0) > 0 THEN
        -- A group followed by more links is a chord whose body is the rest of the chain (Celery
        -- upgrades it the same way). Those links already carry their full error callback lists, so
        -- the body inherits nothing more ('rest_of_chain'): neither the group's own callbacks nor,
        -- a second time, the chain's.
        RETURN canvas.expand(jsonb_build_object('chord', members, 'body', jsonb_build_object('chain', p_chain),
                                                'on_error', canvas.errbacks(c), 'rest_of_chain', true,
                                                'group_link', group_links),
                             NULL, p_chord, p_position, p_on_error, p_prepend, p_parent);
    ELSIF c ? 'group' AND p_chord IS NOT NULL THEN
        -- A group inside a chord or group reports its list of results through an identity body.
        RETURN canvas.expand(jsonb_build_object('chord', members, 'body', '{"task": "canvas.identity"}'::jsonb,
                                                'on_error', canvas.errbacks(c), 'group_link', group_links),
                             NULL, p_chord, p_position, p_on_error, p_prepend, p_parent);
    END IF;

    -- A chord fails when its header does: then its own callbacks, its body's own (the body will
    -- never run) and the inherited ones run. Its body, once it runs, inherits the chord's own and
    -- the inherited ones.
    inherited := canvas.errbacks(c) || canvas.as_list(p_on_error);
    INSERT INTO canvas.chords (kind, size, remaining, body, context, on_error, parent_id)
    VALUES (CASE WHEN c ? 'chord' THEN 'chord' ELSE 'group' END, n, n,
            CASE WHEN c ? 'chord' AND c ? 'link'
                 THEN (c->'body') || jsonb_build_object('link', canvas.as_list(c->'body'->'link') || canvas.as_list(c->'link'))
                 ELSE c->'body' END,
            jsonb_strip_nulls(jsonb_build_object('chain', nullif(p_chain, '[]'::jsonb), 'chord_id', p_chord,
                                                 'position', p_position,
                                                 'body_on_error',
                                                 CASE WHEN NOT c ? 'rest_of_chain' THEN nullif(inherited, '[]'::jsonb) END,
                                                 'link', nullif(group_links, '[]'::jsonb))),
            nullif(canvas.errbacks(c) || canvas.errbacks(c->'body') || canvas.as_list(p_on_error), '[]'::jsonb),
            p_parent)
    RETURNING id INTO chord_id;

    IF n = 0 THEN
        PERFORM canvas.complete_chord(chord_id);
    ELSIF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(members) m
                      WHERE NOT (m ? 'task') OR m ?| ARRAY['on_error', 'link_error', 'link']) THEN
        -- Every member a plain signature: one INSERT for all of them, however many.
        INSERT INTO canvas.jobs (task, args, kwargs, queue, priority, run_at, max_attempts, retry_backoff, time_limit,
                                 soft_time_limit, expires_at, ignore_result, unique_key, unique_for, chord_id, position,
                                 parent_id)
        SELECT f.*, chord_id, (k - 1)::integer, p_parent
        FROM jsonb_array_elements(members) WITH ORDINALITY AS e(m, k), canvas.job_fields(m, p_prepend) f
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
-- Results too large to hand on fail the chord instead.
CREATE FUNCTION canvas.complete_chord(p_chord bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ch canvas.chords;
    s jsonb;
    results jsonb;
    new_body bigint;
    lim bigint := canvas.max_payload_bytes();
BEGIN
    SELECT * INTO ch FROM canvas.chords WHERE id = p_chord AND state = 'pending';
    IF NOT FOUND THEN
        RETURN;  -- failed or cancelled meanwhile: the body never runs
    END IF;
    -- In slot order as jobs_chord_done_idx holds them: an aggregate's own ORDER BY sorts again
    -- (on PostgreSQL 15), and for 100,000 members spilled the sort to disk: 60-75 ms against 40.
    results := to_jsonb(ARRAY(
        SELECT j.result FROM canvas.jobs j
        WHERE j.chord_id = p_chord AND j.chain IS NULL AND j.state = 'succeeded'
        ORDER BY j.position));
    IF pg_column_size(results) > lim THEN
        PERFORM canvas.fail_chord(p_chord, jsonb_build_object(
            'id', p_chord, 'task', ch.kind,
            'error', format('the %s''s gathered results take %s bytes; the limit is %s (pgcanvas.max_payload_bytes)',
                            ch.kind, pg_column_size(results), lim),
            'error_type', 'ResultTooLarge', 'attempt', 0));
        RETURN;
    END IF;
    UPDATE canvas.chords SET state = 'succeeded', finished_at = now() WHERE id = p_chord;
    FOR s IN SELECT value FROM jsonb_array_elements(canvas.as_list(ch.context->'link')) LOOP
        PERFORM canvas.start_canvas(s, ch.parent_id, jsonb_build_array(results));
    END LOOP;
    IF ch.body IS NOT NULL THEN
        new_body := canvas.expand(ch.body, ch.context->'chain', (ch.context->>'chord_id')::bigint,
                                 (ch.context->>'position')::integer, ch.context->'body_on_error',
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

-- Counts `k` members of a chord as done; the call that reaches zero completes it. Successes are
-- counted even while the chord is failed, so an operator's retry of the member that failed it
-- can still complete it.
CREATE FUNCTION canvas.report_success(p_chord bigint, k integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    left_over integer;
    st text;
BEGIN
    UPDATE canvas.chords SET remaining = remaining - k WHERE id = p_chord RETURNING remaining, state INTO left_over, st;
    IF left_over = 0 AND st = 'pending' THEN
        PERFORM canvas.complete_chord(p_chord);
    END IF;
END
$$;

-- Runs the error callbacks in `callbacks` (a list), each with `info` as its argument.
CREATE FUNCTION canvas.run_errbacks(callbacks jsonb, info jsonb, p_parent bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s jsonb;
BEGIN
    FOR s IN SELECT value FROM jsonb_array_elements(canvas.as_list(callbacks)) LOOP
        PERFORM canvas.insert_signature(s, NULL, NULL, NULL, NULL, jsonb_build_array(info), p_parent);
    END LOOP;
END
$$;

-- A member failed for good (or the chord was cancelled, p_state 'cancelled'): the chord ends once,
-- its error callbacks run once, the body never runs, and the failure travels up to whatever the
-- chord reports to. Callers hold the canvas's root lock.
CREATE FUNCTION canvas.fail_chord(p_chord bigint, info jsonb, p_state text DEFAULT 'failed') RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ch canvas.chords;
BEGIN
    UPDATE canvas.chords SET state = p_state, error = info->>'error', finished_at = now()
    WHERE id = p_chord AND state = 'pending' RETURNING * INTO ch;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM canvas.run_errbacks(ch.on_error, info, ch.parent_id);
    IF ch.context ? 'chord_id' THEN
        PERFORM canvas.fail_chord((ch.context->>'chord_id')::bigint, info);
    END IF;
END
$$;

-- What follows a job's failing for good (an error past its retries, a crash past the limit, a
-- rescue past the limit, a cancel, an expiry, a purge): its error callbacks run, and its canvas
-- fails. Each callback gets {"id", "task", "error", "error_type", "attempt"} as its first argument;
-- the type and attempt are read from the job's row unless given (a purged job has none).
-- Callers hold the job's row and its canvas's root lock.
CREATE FUNCTION canvas.job_failed(
    p_id bigint, p_task text, p_error text, p_chord bigint, p_on_error jsonb, p_error_type text DEFAULT NULL,
    p_attempt integer DEFAULT NULL
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    info jsonb;
    v_type text := p_error_type;
    v_attempt integer := p_attempt;
BEGIN
    IF v_type IS NULL OR v_attempt IS NULL THEN
        SELECT coalesce(v_type, j.error_type), coalesce(v_attempt, j.attempt) INTO v_type, v_attempt
        FROM canvas.jobs j WHERE j.id = p_id;
    END IF;
    info := jsonb_build_object('id', p_id, 'task', p_task, 'error', p_error,
                               'error_type', coalesce(v_type, 'TaskError'), 'attempt', coalesce(v_attempt, 0));
    PERFORM canvas.run_errbacks(p_on_error, info, p_id);
    IF p_chord IS NOT NULL THEN
        PERFORM canvas.fail_chord(p_chord, info);
    END IF;
END
$$;

-- The chords from p_chord up to its root fail with `message`, without running any callback: the
-- last resort when the callbacks themselves cannot be enqueued, so that the canvas still ends.
CREATE FUNCTION canvas.fail_chords_quietly(p_chord bigint, message text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c bigint := p_chord;
BEGIN
    WHILE c IS NOT NULL LOOP
        UPDATE canvas.chords SET state = 'failed', error = message, finished_at = now()
        WHERE id = c AND state = 'pending' RETURNING (context->>'chord_id')::bigint INTO c;
        EXIT WHEN NOT FOUND;
    END LOOP;
END
$$;

-- job_failed for paths that must end whatever a callback holds (rescue, cancel, purge): if the
-- job's or its canvas's error callbacks are refused for their data, the canvas fails without
-- them. Returns NULL, or what was refused.
CREATE FUNCTION canvas.job_failed_safely(
    p_id bigint, p_task text, p_error text, p_chord bigint, p_on_error jsonb, p_error_type text DEFAULT NULL,
    p_attempt integer DEFAULT NULL
) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM canvas.job_failed(p_id, p_task, p_error, p_chord, p_on_error, p_error_type, p_attempt);
    RETURN NULL;
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded OR raise_exception THEN
    PERFORM canvas.fail_chords_quietly(p_chord, p_error || '; its error callbacks could not be enqueued: ' || SQLERRM);
    RETURN SQLERRM;
END
$$;

-- Starts a (validated) canvas inside a root (a one-slot group) whose row tells when the whole
-- canvas is done and what it returned, with call-time arguments put first. Returns the root's id.
CREATE FUNCTION canvas.start_canvas(c jsonb, p_parent bigint, p_prepend jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    root bigint;
BEGIN
    INSERT INTO canvas.chords (kind, size, remaining, parent_id) VALUES ('root', 1, 1, p_parent) RETURNING id INTO root;
    PERFORM canvas.expand(c, NULL, root, 0, NULL, p_prepend, p_parent);
    RETURN root;
END
$$;

-- Celery's partial call, canvas.apply_async(args, kwargs): the signatures that start the canvas
-- (a chain's first link, every member of a group or chord header) get `kwargs` merged into their
-- own, the call's keys winning as in Celery; immutable ones are left as they are.
CREATE FUNCTION canvas.with_call_kwargs(c jsonb, kwargs jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF kwargs IS NULL OR kwargs = '{}'::jsonb THEN
        RETURN c;
    ELSIF c ? 'task' THEN
        IF coalesce((c->'options'->>'immutable')::boolean, false) THEN
            RETURN c;
        END IF;
        RETURN c || jsonb_build_object('kwargs', coalesce(c->'kwargs', '{}') || kwargs);
    ELSIF c ? 'chain' THEN
        RETURN jsonb_set(c, '{chain,0}', canvas.with_call_kwargs(c->'chain'->0, kwargs));
    ELSIF c ? 'group' OR c ? 'chord' THEN
        RETURN jsonb_set(c, ARRAY[CASE WHEN c ? 'group' THEN 'group' ELSE 'chord' END],
                         (SELECT coalesce(jsonb_agg(canvas.with_call_kwargs(m, kwargs) ORDER BY k), '[]')
                          FROM jsonb_array_elements(coalesce(c->'group', c->'chord')) WITH ORDINALITY AS e(m, k)));
    END IF;
    RETURN c;  -- a starmap's argument lists are its own
END
$$;

-- A unique key's lock: a transaction advisory lock, held until commit.
CREATE FUNCTION canvas.unique_lock_id(p_key text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('canvas.unique_key:' || p_key, 0)
$$;

-- Locks several unique keys at once, in ascending lock id: the order every transaction that
-- enqueues more than one takes them in (advisory locks come last in the lock order).
CREATE FUNCTION canvas.lock_unique_keys(p_keys text[]) RETURNS void LANGUAGE sql AS $$
    SELECT count(pg_advisory_xact_lock(k.id))
    FROM (SELECT DISTINCT canvas.unique_lock_id(x) AS id FROM unnest(p_keys) x ORDER BY 1) k
$$;

-- The job a unique key stands for now: one waiting or running, or, with p_for seconds, one
-- enqueued within them. Holds the key's lock until commit, so concurrent enqueues of one key are
-- serialised and each sees the others' jobs: under READ COMMITTED every statement here reads a
-- fresh snapshot. Under REPEATABLE READ or SERIALIZABLE the snapshot may predate the other's
-- commit: a waiting or running duplicate then fails on jobs_unique_active_idx (unique_violation)
-- rather than passing, but a window (p_for) could not be honoured, so it is refused.
CREATE FUNCTION canvas.unique_match(p_key text, p_for double precision) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    found_id bigint;
BEGIN
    IF coalesce(p_for, 0) > 0 AND current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'options.unique_for: needs a READ COMMITTED transaction (this one is %)',
            current_setting('transaction_isolation') USING ERRCODE = '25000';
    END IF;
    PERFORM pg_advisory_xact_lock(canvas.unique_lock_id(p_key));
    SELECT id INTO found_id FROM canvas.jobs
    WHERE unique_key = p_key AND state IN ('scheduled', 'queued', 'running');
    IF found_id IS NULL AND coalesce(p_for, 0) > 0 THEN
        SELECT id INTO found_id FROM canvas.jobs
        WHERE unique_key = p_key AND created_at > now() - p_for * interval '1 second'
        ORDER BY id DESC LIMIT 1;
    END IF;
    RETURN found_id;
END
$$;

-- Any insert of a job with a unique key (from a function or a plain INSERT) is skipped when the
-- key already stands for a job; the WHEN clause keeps other inserts free of it.
CREATE FUNCTION canvas.skip_duplicate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF canvas.unique_match(NEW.unique_key, NEW.unique_for) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_unique BEFORE INSERT ON canvas.jobs
    FOR EACH ROW WHEN (NEW.unique_key IS NOT NULL) EXECUTE FUNCTION canvas.skip_duplicate();

-- SELECT canvas.enqueue_canvas('{"chord": [{"task": "canvas.add", "args": [1, 2]}], "body": {"task": "canvas.sum"}}');
-- Validates, then starts the canvas (canvas.start_canvas). `args` and `kwargs` are a partial
-- call's (canvas.with_call_kwargs). A signature with a unique key that already stands for a job
-- gives that job's canvas (or the job, if it was enqueued on its own) instead of a new one.
-- Returns the root's id.
CREATE FUNCTION canvas.enqueue_canvas(c jsonb, p_parent bigint DEFAULT NULL, args jsonb DEFAULT NULL,
                                      kwargs jsonb DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    existing bigint;
BEGIN
    IF args IS NOT NULL AND jsonb_typeof(args) <> 'array' THEN
        RAISE EXCEPTION 'args: expected a JSON array of positional arguments' USING ERRCODE = '22023';
    END IF;
    IF kwargs IS NOT NULL AND jsonb_typeof(kwargs) <> 'object' THEN
        RAISE EXCEPTION 'kwargs: expected a JSON object of keyword arguments' USING ERRCODE = '22023';
    END IF;
    -- Validated before the merge, so a malformed canvas is named by its path.
    PERFORM canvas.validate_canvas(c, '');
    c := canvas.with_call_kwargs(c, kwargs);
    IF c->'options' ? 'unique_key' THEN
        existing := canvas.unique_match(c->'options'->>'unique_key', (c->'options'->>'unique_for')::float8);
        IF existing IS NOT NULL THEN
            RETURN coalesce((SELECT r.id FROM canvas.jobs j JOIN canvas.chords r ON r.id = j.chord_id AND r.kind = 'root'
                             WHERE j.id = existing), existing);
        END IF;
    END IF;
    RETURN canvas.start_canvas(c, p_parent, args);
END
$$;
