-- Control of running work: cancel, retry, purge.

-- Cancelling. A queued job ends `cancelled` at once. A running one ends `cancelled` at once too,
-- which fences off whatever its run reports later, and its worker is told (NOTIFY
-- canvas_cancel, payload the worker id) to kill the pool process running it. Cancelling a chord,
-- group or root cancels it (its body never runs) and everything pending inside it.
-- Returns what happened: 'cancelled', 'already finished', or NULL for an unknown id.
CREATE FUNCTION canvas.cancel(p_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    j canvas.jobs;
    inner_id bigint;
BEGIN
    SELECT * INTO j FROM canvas.jobs WHERE id = p_id FOR UPDATE;
    IF FOUND THEN
        IF j.state IN ('succeeded', 'failed', 'cancelled') THEN
            RETURN 'already finished';
        END IF;
        UPDATE canvas.jobs SET state = 'cancelled', finished_at = now(), error = 'cancelled'
        WHERE id = p_id;
        IF j.state = 'running' THEN
            PERFORM pg_notify('canvas_cancel', j.worker_id::text);
        END IF;
        IF j.chord_id IS NOT NULL THEN
            PERFORM canvas.fail_chord(j.chord_id, jsonb_build_object('id', j.id, 'task', j.task, 'error', 'cancelled'));
        END IF;
        RETURN 'cancelled';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM canvas.chords WHERE id = p_id) THEN
        RETURN NULL;
    END IF;
    UPDATE canvas.chords SET state = 'cancelled', finished_at = now(), error = 'cancelled'
    WHERE id = p_id AND state = 'pending';
    IF NOT FOUND THEN
        RETURN 'already finished';
    END IF;
    PERFORM pg_notify('canvas_cancel', w.worker_id::text)
    FROM (SELECT DISTINCT worker_id FROM canvas.jobs
          WHERE chord_id = p_id AND state = 'running' AND worker_id IS NOT NULL) w;
    UPDATE canvas.jobs SET state = 'cancelled', finished_at = now(), error = 'cancelled'
    WHERE chord_id = p_id AND state IN ('scheduled', 'queued', 'running');
    FOR inner_id IN SELECT id FROM canvas.chords WHERE (context->>'chord_id')::bigint = p_id AND state = 'pending' LOOP
        PERFORM canvas.cancel(inner_id);
    END LOOP;
    -- Whatever this chord reports to can no longer complete either.
    PERFORM canvas.fail_chord((context->>'chord_id')::bigint, jsonb_build_object('id', p_id, 'error', 'cancelled'))
    FROM canvas.chords WHERE id = p_id AND context ? 'chord_id';
    RETURN 'cancelled';
END
$$;

-- Requeues a failed (or cancelled) job with one more attempt. If it was what failed its chord,
-- the chord (and what contains it) goes back to pending, so a success lets the body run.
-- Returns 'requeued', 'not failed', or NULL for an unknown id.
CREATE FUNCTION canvas.retry(p_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    j canvas.jobs;
    c bigint;
BEGIN
    SELECT * INTO j FROM canvas.jobs WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF j.state NOT IN ('failed', 'cancelled') THEN
        RETURN 'not failed';
    END IF;
    UPDATE canvas.jobs SET state = 'queued', run_at = now(), finished_at = NULL, worker_id = NULL,
        max_attempts = greatest(max_attempts, attempt - crashes + 1), crashes = 0
    WHERE id = p_id;
    c := j.chord_id;
    WHILE c IS NOT NULL LOOP
        -- Only while no other member of that chord has failed for good.
        EXIT WHEN EXISTS (SELECT 1 FROM canvas.jobs m WHERE m.chord_id = c AND m.id <> p_id AND m.state IN ('failed', 'cancelled'));
        UPDATE canvas.chords SET state = 'pending', error = NULL, finished_at = NULL
        WHERE id = c AND state IN ('failed', 'cancelled');
        EXIT WHEN NOT FOUND;
        SELECT (context->>'chord_id')::bigint INTO c FROM canvas.chords WHERE id = c;
    END LOOP;
    RETURN 'requeued';
END
$$;

-- Removes queued and scheduled jobs (of one queue, or all). Returns how many.
CREATE FUNCTION canvas.purge(p_queue text DEFAULT NULL) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM canvas.jobs WHERE state IN ('scheduled', 'queued') AND (p_queue IS NULL OR queue = p_queue);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
