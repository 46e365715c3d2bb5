-- Beat: each firing is a row keyed on (schedule, fire time) under a primary key and committed
-- with the jobs it enqueues, so any number of beat processes fire each tick exactly once and no
-- leader is needed.

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

-- Fires every due interval schedule in one call, so a beat serving a thousand schedules makes
-- one round trip per tick instead of one per schedule. Cron schedules still come one at a time
-- from the beat, which computes their next time in their time zone.
CREATE FUNCTION canvas.fire_due_intervals(p_limit integer)
RETURNS TABLE (name text, task text, missed integer, canvas_id bigint) LANGUAGE plpgsql AS $$
DECLARE
    s canvas.schedules;
    passed integer;
    root bigint;
BEGIN
    FOR s IN
        SELECT * FROM canvas.schedules sc
        WHERE sc.enabled AND sc.every_seconds IS NOT NULL AND sc.next_fire_at <= clock_timestamp()
        ORDER BY sc.next_fire_at LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    LOOP
        passed := floor(extract(epoch FROM clock_timestamp() - s.next_fire_at) / s.every_seconds);
        root := canvas.fire_schedule(
            s.id, s.next_fire_at, s.next_fire_at + (passed + 1) * s.every_seconds * interval '1 second', passed);
        IF root IS NOT NULL THEN
            name := s.name;
            task := coalesce(s.canvas->>'task', 'canvas');
            missed := passed;
            canvas_id := root;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
