-- Beat: each firing is a row keyed on (schedule, fire time) under a primary key and committed
-- with the jobs it enqueues, so any number of beat processes fire each tick exactly once and no
-- leader is needed.
--
-- One clock: what is due and when each schedule fires next are both reckoned from the database's
-- clock_timestamp(), read once per batch, never from a host's clock, so a host minutes off can
-- neither stall a schedule (a next time at or before the due one) nor skip or double its ticks.
--
-- Isolation: a tick whose canvas cannot be enqueued records its error on the schedule and on its
-- firing row, moves the schedule on to its next tick, and leaves every other tick of the batch to
-- fire.

-- Fires a batch of ticks: ticks[i] is schedule p_ids[i] at p_fire_at[i], next due at p_next[i],
-- after p_missed[i] ticks nobody fired. p_errors[i], when given, is a failure the beat already
-- knows of (a cron expression it cannot read), recorded without enqueueing. A tick another beat
-- already fired is skipped and not returned. When p_guarded, each enqueue runs in a subtransaction
-- of its own so that its failure is recorded instead of raised.
CREATE FUNCTION canvas.fire_ticks_once(
    p_ids bigint[], p_fire_at timestamptz[], p_next timestamptz[], p_missed integer[], p_errors text[],
    p_guarded boolean)
RETURNS TABLE (fired_name text, fired_task text, fired_missed integer, fired_root bigint, fired_error text)
LANGUAGE plpgsql AS $$
DECLARE
    s canvas.schedules;
    root bigint;
    fail text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        INSERT INTO canvas.schedule_firings (schedule_id, fire_at, missed)
        VALUES (p_ids[i], p_fire_at[i], p_missed[i])
        ON CONFLICT DO NOTHING;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO s FROM canvas.schedules WHERE id = p_ids[i];
        root := NULL;
        fail := p_errors[i];
        IF fail IS NOT NULL THEN
            NULL;
        ELSIF p_guarded THEN
            BEGIN
                root := canvas.enqueue_canvas(s.canvas);
            -- Refused for what it holds; a deadlock or a timeout fails the whole tick instead, and
            -- the beat tries again.
            EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded
                           OR raise_exception THEN
                GET STACKED DIAGNOSTICS fail = MESSAGE_TEXT;
            END;
        ELSE
            root := canvas.enqueue_canvas(s.canvas);
        END IF;
        IF fail IS NULL THEN
            UPDATE canvas.schedule_firings SET canvas_id = root
            WHERE schedule_id = p_ids[i] AND fire_at = p_fire_at[i];
            UPDATE canvas.schedules SET last_fire_at = p_fire_at[i], next_fire_at = p_next[i], last_error = NULL
            WHERE id = p_ids[i] AND next_fire_at <= p_next[i];
        ELSE
            UPDATE canvas.schedule_firings SET error = fail
            WHERE schedule_id = p_ids[i] AND fire_at = p_fire_at[i];
            UPDATE canvas.schedules SET next_fire_at = p_next[i], last_error = fail, last_error_at = clock_timestamp()
            WHERE id = p_ids[i] AND next_fire_at <= p_next[i];
        END IF;
        fired_name := s.name;
        fired_task := coalesce(s.canvas->>'task', 'canvas');
        fired_missed := p_missed[i];
        fired_root := root;
        fired_error := fail;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Fires a batch in one go, and only when some tick of it fails, again with each tick guarded:
-- the common batch pays one subtransaction, not one per schedule (a transaction with more than
-- 64 subtransactions slows every other session's snapshots while it runs).
CREATE FUNCTION canvas.fire_ticks(
    p_ids bigint[], p_fire_at timestamptz[], p_next timestamptz[], p_missed integer[], p_errors text[] DEFAULT NULL)
RETURNS TABLE (fired_name text, fired_task text, fired_missed integer, fired_root bigint, fired_error text)
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        -- A PL/pgSQL set-returning function computes all its rows before the first is read, so
        -- a failure here has returned nothing yet.
        RETURN QUERY SELECT * FROM canvas.fire_ticks_once(p_ids, p_fire_at, p_next, p_missed, p_errors, false);
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded OR raise_exception THEN
        RETURN QUERY SELECT * FROM canvas.fire_ticks_once(p_ids, p_fire_at, p_next, p_missed, p_errors, true);
    END;
END
$$;

-- Fires every due interval schedule in one call, so a beat serving a thousand schedules makes
-- one round trip per tick instead of one per schedule. A schedule's ticks are counted from its
-- first: the next is the first after the database's now. Cron schedules come from the beat,
-- which computes their next time in their time zone from the instant `canvas.due_crons` gives.
CREATE FUNCTION canvas.fire_due_intervals(p_limit integer)
RETURNS TABLE (fired_name text, fired_task text, fired_missed integer, fired_root bigint, fired_error text)
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    ids bigint[];
    fire_ats timestamptz[];
    nexts timestamptz[];
    misseds integer[];
BEGIN
    SELECT array_agg(d.id ORDER BY d.next_fire_at), array_agg(d.next_fire_at ORDER BY d.next_fire_at),
           array_agg(d.next_fire_at + (d.passed + 1) * d.every_seconds * interval '1 second' ORDER BY d.next_fire_at),
           array_agg(least(d.passed, 2147483647)::integer ORDER BY d.next_fire_at)
    INTO ids, fire_ats, nexts, misseds
    FROM (
        SELECT sc.id, sc.next_fire_at, sc.every_seconds,
               floor(extract(epoch FROM now_ - sc.next_fire_at) / sc.every_seconds)::bigint AS passed
        FROM canvas.schedules sc
        WHERE sc.enabled AND sc.every_seconds IS NOT NULL AND sc.next_fire_at <= now_
        ORDER BY sc.next_fire_at LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ) d;
    IF ids IS NOT NULL THEN
        RETURN QUERY SELECT * FROM canvas.fire_ticks(ids, fire_ats, nexts, misseds);
    END IF;
END
$$;

-- The due cron schedules this beat can lock (another beat skips them), with the database's now:
-- the beat computes each next time strictly after it, so it is always after the due one.
CREATE FUNCTION canvas.due_crons(p_limit integer)
RETURNS TABLE (due_now timestamptz, due_id bigint, due_cron text, due_time_zone text, due_fire_at timestamptz)
LANGUAGE sql AS $$
    WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS t)
    SELECT clock.t, sc.id, sc.cron, sc.time_zone, sc.next_fire_at
    FROM canvas.schedules sc, clock
    WHERE sc.enabled AND sc.cron IS NOT NULL AND sc.next_fire_at <= clock.t
    ORDER BY sc.next_fire_at LIMIT p_limit
    FOR UPDATE OF sc SKIP LOCKED
$$;
