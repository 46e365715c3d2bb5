-- Retention: finished jobs and canvases are deleted after an age, never before what needs their
-- results is done.

-- Finished jobs are pruned only once nothing needs their results: a member of a chord or group
-- stays until that chord or group is done.
CREATE FUNCTION canvas.prune(p_age interval, p_limit integer DEFAULT 10000)
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
