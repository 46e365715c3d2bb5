-- Control of running work: cancel, retry, purge. Each follows the lock order of canvas.sql: job
-- rows in ascending id order, then the canvases' roots, then chords.

-- Cancelling a job: a scheduled or queued job ends `cancelled` at once. A running one ends
-- `cancelled` at once too, which fences off whatever its run reports later, and its worker is told
-- (NOTIFY canvas_cancel, payload the worker id) to kill the pool process running it. Its error
-- callbacks run and its canvas fails, as for any job that fails for good.
-- Cancelling a chord, group or root cancels it (its body never runs) and everything pending inside
-- it; its own error callbacks run once, with the error "cancelled", and whatever contains it fails.
-- Returns what happened: 'cancelled', 'already finished', or NULL for an unknown id.
CREATE FUNCTION canvas.cancel(p_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    j canvas.jobs;
    inside bigint[];
    ch canvas.chords;
BEGIN
    SELECT * INTO j FROM canvas.jobs WHERE id = p_id FOR UPDATE;
    IF FOUND THEN
        IF j.state IN ('succeeded', 'failed', 'cancelled') THEN
            RETURN 'already finished';
        END IF;
        PERFORM canvas.lock_roots(ARRAY[j.chord_id]);
        UPDATE canvas.jobs SET state = 'cancelled', finished_at = now(), error = 'cancelled',
            error_type = 'TaskRevokedError' WHERE id = p_id;
        IF j.state = 'running' THEN
            PERFORM pg_notify('canvas_cancel', j.worker_id::text);
        END IF;
        PERFORM canvas.job_failed_safely(j.id, j.task, 'cancelled', j.chord_id, j.on_error);
        RETURN 'cancelled';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM canvas.chords WHERE id = p_id) THEN
        RETURN NULL;
    END IF;
    -- The jobs of the chord and of every chord inside it (found through their slots), locked
    -- first, in id order. Waiting members are in jobs_chord_waiting_idx, running ones only in
    -- jobs_running_idx (migration 0019): the states are written as two terms so that the planner
    -- reads each index for its own.
    inside := canvas.chords_within(p_id);
    PERFORM 1 FROM canvas.jobs WHERE chord_id = ANY (inside) AND (state IN ('scheduled', 'queued') OR state = 'running')
    ORDER BY id FOR UPDATE;
    PERFORM canvas.lock_roots(ARRAY[p_id]);
    SELECT * INTO ch FROM canvas.chords WHERE id = p_id;
    IF ch.state <> 'pending' THEN
        RETURN 'already finished';
    END IF;
    -- A link that finished before the root lock may have added chords and jobs: look again. Those
    -- new jobs are taken only if free; one a worker is finishing right now (it waits for the root
    -- lock held here) runs to its end, and reports into a cancelled chord, which takes nothing.
    inside := canvas.chords_within(p_id);
    PERFORM pg_notify('canvas_cancel', w.worker_id::text)
    FROM (SELECT DISTINCT worker_id FROM canvas.jobs
          WHERE chord_id = ANY (inside) AND state = 'running' AND worker_id IS NOT NULL) w;
    UPDATE canvas.jobs SET state = 'cancelled', finished_at = now(), error = 'cancelled', error_type = 'TaskRevokedError'
    WHERE id IN (SELECT id FROM canvas.jobs
                 WHERE chord_id = ANY (inside) AND (state IN ('scheduled', 'queued') OR state = 'running')
                 ORDER BY id FOR UPDATE SKIP LOCKED);
    UPDATE canvas.chords SET state = 'cancelled', finished_at = now(), error = 'cancelled'
    WHERE id = ANY (inside) AND id <> p_id AND state = 'pending';
    BEGIN
        PERFORM canvas.fail_chord(p_id, jsonb_build_object('id', p_id, 'task', ch.kind, 'error', 'cancelled',
                                                           'error_type', 'TaskRevokedError', 'attempt', 0),
                                  'cancelled');
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded OR raise_exception THEN
        -- Its callbacks were refused: it ends all the same, and so does what contains it.
        UPDATE canvas.chords SET state = 'cancelled', finished_at = now(), error = 'cancelled' WHERE id = p_id;
        PERFORM canvas.fail_chords_quietly((ch.context->>'chord_id')::bigint,
                                           'cancelled; its error callbacks could not be enqueued: ' || SQLERRM);
    END;
    RETURN 'cancelled';
END
$$;

-- The chord and every chord inside it, found through their slots (chords_slot_idx).
CREATE FUNCTION canvas.chords_within(p_id bigint) RETURNS bigint[] LANGUAGE sql STABLE AS $$
    WITH RECURSIVE down(id) AS (
        SELECT p_id
        UNION
        SELECT c.id FROM canvas.chords c JOIN down ON (c.context->>'chord_id')::bigint = down.id
        WHERE c.context ? 'chord_id'
    )
    SELECT array_agg(id) FROM down
$$;

-- Requeues a failed (or cancelled) job with one more attempt. If it was what failed its chord,
-- the chord (and what contains it) goes back to pending; members that succeeded meanwhile were
-- counted, so this member's success lets the body run. A chord some of whose members were pruned
-- stays failed (the job is requeued all the same): reopened, its body would get a partial list.
-- Call it first in its transaction: it takes the pruner's lock before any row (docs/broker.md).
-- A canvas reopened this way that fails again runs its error callbacks again (docs/canvas.md).
-- Returns 'requeued' (followed by "; its chord N stays failed: why" when a chord it failed stays
-- so), 'not failed', or NULL for an unknown id.
CREATE FUNCTION canvas.retry(p_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    j canvas.jobs;
    ch canvas.chords;
    c bigint;
    below bigint;
    why text;
BEGIN
    -- The pruner's lock, before any row: a batch of pruning (canvas.prune) then either committed
    -- before the chords are checked below (and marked those whose members it took), or starts
    -- after this transaction, and finds the chord pending. Taken after a row, it could deadlock
    -- with a batch deleting that row. A batch is short; a retry is an operator's, so pruning
    -- skipping one round for it costs nothing. Under a snapshot taken before the lock the check
    -- could miss a batch that committed meanwhile: read committed only.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'canvas.retry needs read committed isolation, not %', current_setting('transaction_isolation')
            USING ERRCODE = '25000';
    END IF;
    PERFORM pg_advisory_xact_lock(canvas.prune_lock_id());
    SELECT * INTO j FROM canvas.jobs WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF j.state NOT IN ('failed', 'cancelled') THEN
        RETURN 'not failed';
    END IF;
    PERFORM canvas.lock_roots(ARRAY[j.chord_id]);
    -- After the roots: unique keys' advisory locks come last in the lock order (the pruner's,
    -- above, comes first).
    IF j.unique_key IS NOT NULL AND canvas.unique_match(j.unique_key, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'job % has unique_key "%", which stands for job % now: retry refused', p_id, j.unique_key,
            canvas.unique_match(j.unique_key, NULL) USING ERRCODE = '23505';
    END IF;
    -- Back to queued even if it had expired: an operator's retry is a new start.
    UPDATE canvas.jobs SET state = 'queued', run_at = now(), finished_at = NULL, worker_id = NULL,
        max_attempts = greatest(max_attempts, attempt - crashes + 1), crashes = 0,
        expires_at = CASE WHEN expires_at <= now() THEN NULL ELSE expires_at END
    WHERE id = p_id;
    c := j.chord_id;
    WHILE c IS NOT NULL LOOP
        SELECT * INTO ch FROM canvas.chords WHERE id = c;
        IF NOT FOUND THEN
            why := format('its chord %s is gone (pruned)', c);
            EXIT;
        END IF;
        EXIT WHEN ch.state NOT IN ('failed', 'cancelled');
        -- Only while nothing else inside that chord has failed for good, and while the pruner has
        -- taken nothing from it (results it would gather, a failed member or chord no retry could
        -- reach any more).
        IF EXISTS (SELECT 1 FROM canvas.jobs m
                   WHERE m.chord_id = c AND m.id <> p_id AND m.state IN ('failed', 'cancelled'))
           OR EXISTS (SELECT 1 FROM canvas.chords s
                      WHERE (s.context->>'chord_id')::bigint = c AND s.context ? 'chord_id'
                        AND s.id IS DISTINCT FROM below AND s.state IN ('failed', 'cancelled')) THEN
            why := 'another of its members failed too';
        ELSIF ch.members_pruned THEN
            why := 'some of its members were pruned (--prune-after)';
        END IF;
        IF why IS NOT NULL THEN
            why := format('its %s %s stays %s: %s', CASE ch.kind WHEN 'root' THEN 'canvas' ELSE ch.kind END, c,
                          ch.state, why);
            EXIT;
        END IF;
        UPDATE canvas.chords SET state = 'pending', error = NULL, finished_at = NULL WHERE id = c;
        below := c;
        c := (ch.context->>'chord_id')::bigint;
    END LOOP;
    -- What was not reopened, and why, for the operator: the job runs on its own then.
    RETURN 'requeued' || coalesce('; ' || why, '');
END
$$;

-- Removes scheduled and queued jobs (of one queue, or all). A removed member of a canvas fails
-- it, with its error callbacks, as a job failing for good would ("purged").
-- Returns how many it removed.
CREATE FUNCTION canvas.purge(p_queue text DEFAULT NULL) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    gone canvas.jobs[];
    j canvas.jobs;
BEGIN
    WITH picked AS (
        SELECT id FROM canvas.jobs
        WHERE state IN ('scheduled', 'queued') AND (p_queue IS NULL OR queue = p_queue)
        ORDER BY id FOR UPDATE
    ), deleted AS (
        DELETE FROM canvas.jobs x USING picked WHERE x.id = picked.id RETURNING x.*
    )
    SELECT array_agg(d::canvas.jobs) INTO gone FROM deleted d;
    IF gone IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM canvas.lock_roots(ARRAY(SELECT DISTINCT g.chord_id FROM unnest(gone) g WHERE g.chord_id IS NOT NULL));
    FOR j IN SELECT * FROM unnest(gone) g WHERE g.chord_id IS NOT NULL OR g.on_error IS NOT NULL ORDER BY g.id LOOP
        PERFORM canvas.job_failed_safely(j.id, j.task, 'purged', j.chord_id, j.on_error, 'TaskRevokedError', j.attempt);
    END LOOP;
    RETURN cardinality(gone);
END
$$;
