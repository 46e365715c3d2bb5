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
