-- Retention: finished jobs, finished chords and old schedule firings are deleted after an age,
-- never before what needs them is done. See docs/operations.md (--prune-after).

-- The advisory lock a batch of pruning holds, one pruner at a time. canvas.retry takes it too,
-- before anything else: a retry that reopens a chord must not pass a batch taking the chord's
-- members (see the pass over members below). The key is "prune" in ASCII (the migrator's is
-- "pgcanv").
CREATE FUNCTION canvas.prune_lock_id() RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT x'7072756e65'::bigint $$;

-- One batch of pruning, short enough to run between two heartbeats of the maintenance thread
-- that calls it (Pruner.swift loops over batches within a time budget).
--
-- Returns one row, or none when another pruner holds the lock: one pruner at a time across the
-- fleet, because two would only fight over the same rows and double the I/O; the others skip
-- rather than wait, so a worker's maintenance thread never blocks on another's.
--
-- Jobs outside chords are scanned in (finished_at, id) order from a cursor, at most p_limit of
-- them per call, through jobs_finished_idx: the entries of the rows earlier batches deleted stay
-- in the index until VACUUM, and the cursor spares each batch reading past them. While the scan
-- fills its batch, (next_at, next_id) say where to continue. Once it comes back short, the same
-- call prunes the finished members of chords that finished longer ago than the age (by chord,
-- through jobs_chord_done_idx: a chord's members are never in jobs_finished_idx, so that they
-- cost no more index entries than plain jobs); once that pass, too, comes back short, a batch
-- of chords and of firings: chords go last because a finished chord can go only once no job
-- points at it, which the passes over jobs have just made true.
--
-- SELECT * FROM canvas.prune('1 day');  -- one batch
CREATE FUNCTION canvas.prune(
    p_age interval, p_limit integer DEFAULT 5000, p_after_at timestamptz DEFAULT NULL, p_after_id bigint DEFAULT NULL
) RETURNS TABLE (jobs integer, chords integer, firings integer, next_at timestamptz, next_id bigint)
-- Generic plans: the planner then picks the index and TID paths the statements are written for
-- whatever one batch's values are (with a 5,000-element ctid array it would rather scan a small
-- table), so that the cost of a batch does not depend on the table it is in. JIT would compile
-- each batch's plans afresh (tens of milliseconds) to save less than that.
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    cutoff timestamptz := now() - p_age;
    scanned integer;
    last_at timestamptz;
    last_id bigint;
    doomed tid[];
    members integer;
    touched bigint[];
    slots bigint[];
    -- What the session had, put back after each DELETE (see the first DELETE).
    indexscan text := current_setting('enable_indexscan');
    bitmapscan text := current_setting('enable_bitmapscan');
    seqscan text := current_setting('enable_seqscan');
BEGIN
    IF p_age IS NULL OR p_age < interval '0' OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'canvas.prune: the age must be 0 or more and the limit at least 1' USING ERRCODE = '22023';
    END IF;
    -- A transaction lock: it goes with the batch, whatever happens to the connection.
    IF NOT pg_try_advisory_xact_lock(canvas.prune_lock_id()) THEN
        RETURN;
    END IF;
    jobs := 0;
    chords := 0;
    firings := 0;

    -- Each DELETE below finds its rows by ctid (a TID scan: no index, no table scan) and checks
    -- again, on the row itself, what it was chosen for. (`voteradmin retry`, the one thing that
    -- turns a finished job or chord back, waits for the batch: it takes the same lock. A ctid
    -- could name another row only if VACUUM freed the slot between the two statements and an
    -- insert took it; a new row is not old and finished.)
    -- The probes for what must be kept are LATERAL … LIMIT 1, one index lookup per candidate,
    -- where NOT EXISTS lets the planner hash a whole table once per batch.

    -- Jobs outside any chord, through jobs_finished_idx (which holds only those: migration 0019).
    SELECT count(*)::integer,
           (array_agg(s.finished_at ORDER BY s.finished_at DESC, s.id DESC))[1],
           (array_agg(s.id ORDER BY s.finished_at DESC, s.id DESC))[1],
           coalesce(array_agg(s.ctid), '{}')
    INTO scanned, last_at, last_id, doomed
    FROM (
        SELECT j.ctid, j.id, j.finished_at FROM canvas.jobs j
        WHERE j.state IN ('succeeded', 'failed', 'cancelled') AND j.chord_id IS NULL AND j.finished_at < cutoff
          -- (finished_at, id) > cursor, written so that the first half bounds the index scan.
          AND j.finished_at >= coalesce(p_after_at, '-infinity')
          AND (p_after_id IS NULL OR j.finished_at > p_after_at OR j.id > p_after_id)
        ORDER BY j.finished_at, j.id
        LIMIT p_limit
    ) s;
    -- Each DELETE must take the TID path. Its rechecks match the partial indexes' columns, and
    -- when the statistics were taken before any job finished (a new table, a queue that just
    -- started: the soak of docs/benchmarks.md) the generic plan rather scans jobs_finished_idx
    -- for finished_at < cutoff and tests every row against the whole ctid array: 2.8 s for one
    -- batch of 5,000 among 50,000 finished jobs, growing with the backlog, so the pruner fell
    -- further behind with every batch. With index paths off for the DELETE alone (its plan is
    -- made, and cached, under these settings) only the TID scan or a sequential scan is left.
    PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);
    DELETE FROM canvas.jobs j
    WHERE j.ctid = ANY (doomed) AND j.state IN ('succeeded', 'failed', 'cancelled') AND j.chord_id IS NULL
      AND j.finished_at < cutoff;
    GET DIAGNOSTICS jobs = ROW_COUNT;
    PERFORM set_config('enable_indexscan', indexscan, true), set_config('enable_bitmapscan', bitmapscan, true);
    IF scanned = p_limit THEN
        next_at := last_at;
        next_id := last_id;
        RETURN NEXT;
        RETURN;
    END IF;

    -- A finished member of a chord or group stays while its chord is pending (the chord gathers
    -- its members' results when it completes) and for the age after the chord finished, so that
    -- `voteradmin retry` of a failed member, which reopens the chord, still finds the results of
    -- the siblings it completes with. After the age, a retry may still come: the chords whose
    -- members a batch takes are marked (members_pruned), and a retry, which takes this batch's
    -- lock first, leaves a marked chord failed. So members are pruned by chord: the finished ones of
    -- chords finished longer ago than the age, through jobs_chord_done_idx, chords in the order
    -- they finished. Each chord's members are read a batch at most (the index has no finished_at:
    -- the age is checked on the row), so a failed chord whose members ran on after it and are
    -- not that old yet costs one batch of reads a call, not all its members; its later members
    -- wait until those go. A batch that comes back full is reported as such (its count of jobs
    -- reaches the limit) and the call ends there: the chords and firings below wait until the
    -- members are done, so that a call never probes every aged chord still holding members. A
    -- member whose chord row is gone stays: nothing here deletes a chord while a job points at
    -- it, so only a hand-made row (or a TRUNCATE of canvas.chords) leaves one.
    SELECT coalesce(array_agg(s.ctid), '{}') INTO doomed
    FROM (
        SELECT m.ctid FROM canvas.chords c
        CROSS JOIN LATERAL (
            SELECT r.ctid FROM (
                SELECT j.ctid, j.finished_at FROM canvas.jobs j
                WHERE j.chord_id = c.id AND j.state IN ('succeeded', 'failed', 'cancelled')
                ORDER BY j.position
                LIMIT p_limit
            ) r
            WHERE r.finished_at < cutoff
        ) m
        WHERE c.state <> 'pending' AND c.finished_at < cutoff
        ORDER BY c.finished_at
        LIMIT p_limit - jobs
    ) s;
    PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);
    WITH gone AS (
        DELETE FROM canvas.jobs j
        WHERE j.ctid = ANY (doomed) AND j.state IN ('succeeded', 'failed', 'cancelled') AND j.chord_id IS NOT NULL
          AND j.finished_at < cutoff
        RETURNING j.chord_id
    )
    SELECT count(*), coalesce(array_agg(DISTINCT g.chord_id), '{}') INTO members, touched FROM gone g;
    PERFORM set_config('enable_indexscan', indexscan, true), set_config('enable_bitmapscan', bitmapscan, true);
    -- Those chords no longer hold all they gathered: a retry must not reopen them (canvas.retry).
    -- By key, whatever the statistics were when its generic plan was made.
    IF cardinality(touched) > 0 THEN
        PERFORM set_config('enable_seqscan', 'off', true);
        UPDATE canvas.chords c SET members_pruned = true WHERE c.id = ANY (touched) AND NOT c.members_pruned;
        PERFORM set_config('enable_seqscan', seqscan, true);
    END IF;
    jobs := jobs + members;
    IF jobs >= p_limit THEN
        RETURN NEXT;
        RETURN;
    END IF;

    -- A finished chord goes once its age passed, no job points at it any more (the passes above
    -- took its finished members), and no chord inside it is still pending. Few are kept (those
    -- with a job still waiting or running, or finished within the age), so unlike jobs the scan
    -- needs no cursor.
    -- A member waiting or finished is in an index by chord (jobs_chord_waiting_idx,
    -- jobs_chord_done_idx); a running one only in jobs_running_idx, by worker: those few are read
    -- once, in the same statement (one snapshot, so a member claimed meanwhile is seen in one
    -- state or the other), not once per chord.
    WITH running AS MATERIALIZED (
        SELECT DISTINCT j.chord_id FROM canvas.jobs j WHERE j.state = 'running' AND j.chord_id IS NOT NULL
    )
    SELECT coalesce(array_agg(s.ctid), '{}') INTO doomed
    FROM (
        SELECT c.ctid FROM canvas.chords c
        LEFT JOIN LATERAL (
            SELECT 1 AS keep FROM canvas.jobs j WHERE j.chord_id = c.id AND j.state IN ('scheduled', 'queued')
            UNION ALL
            SELECT 1 FROM canvas.jobs j WHERE j.chord_id = c.id AND j.state IN ('succeeded', 'failed', 'cancelled')
            LIMIT 1
        ) k ON true
        -- Nor while a chord inside it is still pending: it will report here, and its root lock
        -- and its failure path go through this row.
        LEFT JOIN LATERAL (
            SELECT 1 AS keep FROM canvas.chords d
            WHERE (d.context->>'chord_id')::bigint = c.id AND d.context ? 'chord_id' AND d.state = 'pending'
            LIMIT 1
        ) inner_ ON true
        WHERE c.state <> 'pending' AND c.finished_at < cutoff AND k.keep IS NULL AND inner_.keep IS NULL
          AND c.id NOT IN (SELECT r.chord_id FROM running r)
        ORDER BY c.finished_at
        LIMIT p_limit
    ) s;
    PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);
    WITH gone AS (
        DELETE FROM canvas.chords c
        WHERE c.ctid = ANY (doomed) AND c.state <> 'pending' AND c.finished_at < cutoff
        RETURNING c.id, (c.context->>'chord_id')::bigint AS slot
    )
    SELECT count(*), coalesce(array_agg(g.id), '{}'), coalesce(array_agg(g.slot) FILTER (WHERE g.slot IS NOT NULL), '{}')
    INTO chords, touched, slots FROM gone g;
    PERFORM set_config('enable_indexscan', indexscan, true), set_config('enable_bitmapscan', bitmapscan, true);
    -- A chord that stays while one in its slot goes (a member of it still points at it), and one
    -- that stays while the chord holding it goes (its members wait or finished late), can no
    -- longer be reopened whole: marked, as for members (canvas.retry).
    -- Through the primary key and chords_slot_idx: planned once for the session (a generic plan),
    -- on a table that may then have been small, it would otherwise read every chord each batch.
    IF chords > 0 THEN
        PERFORM set_config('enable_seqscan', 'off', true);
        UPDATE canvas.chords c SET members_pruned = true
        WHERE (c.id = ANY (slots) OR ((c.context->>'chord_id')::bigint = ANY (touched) AND c.context ? 'chord_id'))
          AND NOT c.members_pruned;
        PERFORM set_config('enable_seqscan', seqscan, true);
    END IF;

    -- A firing row is what refuses a tick a second time (canvas.fire_schedule: its primary key
    -- makes the second INSERT do nothing). Every beat fires a schedule's current next_fire_at
    -- under a row lock, and fire_schedule never moves next_fire_at backwards, so a tick comes
    -- round again only when next_fire_at is set to a time not later than one already fired: the
    -- beat computes a cron schedule's next time on its host's clock, which may be behind the
    -- database's (next_fire_at then stays on the tick just fired), and `schedule enable` sets it
    -- from the host's clock too. The tick next_fire_at can land on again is the latest one fired,
    -- or, with a clock further off, one fired before it: firings younger than the age all stay,
    -- and each schedule's latest firing stays for good. Only a clock off by more than the age
    -- (a day by default) could fire an older tick again. The few kept latest firings are why
    -- this scan, too, needs no cursor.
    SELECT coalesce(array_agg(s.ctid), '{}') INTO doomed
    FROM (
        SELECT f.ctid FROM canvas.schedule_firings f
        CROSS JOIN LATERAL (
            SELECT 1 FROM canvas.schedule_firings l
            WHERE l.schedule_id = f.schedule_id AND l.fire_at > f.fire_at
            LIMIT 1
        ) later
        WHERE f.fired_at < cutoff
        ORDER BY f.fired_at
        LIMIT p_limit
    ) s;
    PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);
    DELETE FROM canvas.schedule_firings f WHERE f.ctid = ANY (doomed) AND f.fired_at < cutoff;
    GET DIAGNOSTICS firings = ROW_COUNT;
    PERFORM set_config('enable_indexscan', indexscan, true), set_config('enable_bitmapscan', bitmapscan, true);
    RETURN NEXT;
END
$$;
