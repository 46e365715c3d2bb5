-- Periodic tasks without a single point of failure, and control of running work.
--
-- Beat: each firing is a row keyed on (schedule, fire time) under a primary key and committed
-- with the jobs it enqueues, so any number of beat processes fire each tick exactly once and no
-- leader is needed. The next fire time is computed by the beat (cron needs time-zone rules) and
-- stored with the firing.

CREATE TABLE canvas.schedules (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL UNIQUE CHECK (name <> ''),
    -- What to enqueue: a signature or any canvas, in the JSON form of docs/canvas.md.
    canvas        jsonb       NOT NULL,
    every_seconds double precision CHECK (every_seconds > 0),
    cron          text,
    time_zone     text        NOT NULL DEFAULT 'UTC',
    enabled       boolean     NOT NULL DEFAULT true,
    last_fire_at  timestamptz,
    next_fire_at  timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((every_seconds IS NULL) <> (cron IS NULL))
);
CREATE INDEX schedules_due_idx ON canvas.schedules (next_fire_at) WHERE enabled;

CREATE TABLE canvas.schedule_firings (
    schedule_id bigint      NOT NULL REFERENCES canvas.schedules (id) ON DELETE CASCADE,
    fire_at     timestamptz NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    canvas_id   bigint,
    -- Ticks that passed while no beat ran; they are fired once, here, not once each.
    missed      integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, fire_at)
);

-- Fires one tick of a schedule, once: the firing row's key refuses a second beat, and the canvas
-- is enqueued in the same transaction. Returns the canvas's root id, or NULL when this tick was
-- already fired.
CREATE FUNCTION canvas.fire_schedule(p_schedule bigint, p_fire_at timestamptz, p_next timestamptz, p_missed integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s canvas.schedules;
    root bigint;
BEGIN
    INSERT INTO canvas.schedule_firings (schedule_id, fire_at, missed)
    VALUES (p_schedule, p_fire_at, p_missed)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO s FROM canvas.schedules WHERE id = p_schedule;
    root := canvas.enqueue_canvas(s.canvas);
    UPDATE canvas.schedule_firings SET canvas_id = root WHERE schedule_id = p_schedule AND fire_at = p_fire_at;
    UPDATE canvas.schedules SET last_fire_at = p_fire_at, next_fire_at = p_next
    WHERE id = p_schedule AND next_fire_at <= p_next;
    RETURN root;
END
$$;

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
    WHERE chord_id = p_id AND state IN ('queued', 'running');
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

-- Removes queued jobs (of one queue, or all). Returns how many.
CREATE FUNCTION canvas.purge(p_queue text DEFAULT NULL) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM canvas.jobs WHERE state = 'queued' AND (p_queue IS NULL OR queue = p_queue);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
