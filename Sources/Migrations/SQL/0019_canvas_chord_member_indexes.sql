-- A chord's members at the index cost of plain jobs. jobs_chord_idx held every member in every
-- state, and no update of a job is HOT (state is in the partial indexes' predicates), so a
-- member added an entry to it when claimed and another when finished: two index entries a plain
-- job does not make, and 100,000 dead entries that the chord's completion then read past to
-- gather the results. The 100,000-member chord took 1.2-1.4 times the drain of 100,000 plain
-- jobs (docs/benchmarks.md).
--
-- The members now live in one of two indexes by state, and in neither while they run:
-- - jobs_chord_waiting_idx, scheduled and queued: entered when enqueued (as before) or sent back
--   to wait (a retry, a rescue); left, at no cost, when claimed.
-- - jobs_chord_done_idx, finished: entered once, when the member finishes. The completion reads
--   the results here in slot order, past no entry of a member that was waiting.
-- A running member is found through jobs_running_idx, which every claim adds to anyway: the
-- running jobs are at most the workers' slots. Every query that looks for a chord's members in
-- any state names the states, so that each part is served by its index: see cancel
-- (functions/control.sql), prune (functions/retention.sql), CanvasStatus and the dashboard.
--
-- jobs_finished_idx, which every finished job entered, now holds only jobs outside chords, so a
-- member's finish makes one index entry besides its primary key's, as a plain job's does. The
-- pruner takes finished members by chord, through jobs_chord_done_idx (functions/retention.sql).
--
-- Built under the migration's lock, as 0018's index is: on a table holding millions of jobs,
-- writes wait for the builds (seconds per million rows).
DROP INDEX canvas.jobs_chord_idx;
CREATE INDEX jobs_chord_waiting_idx ON canvas.jobs (chord_id, position)
    WHERE chord_id IS NOT NULL AND state IN ('scheduled', 'queued');
CREATE INDEX jobs_chord_done_idx ON canvas.jobs (chord_id, position)
    WHERE chord_id IS NOT NULL AND state IN ('succeeded', 'failed', 'cancelled');
DROP INDEX canvas.jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON canvas.jobs (finished_at, id)
    WHERE state IN ('succeeded', 'failed', 'cancelled') AND chord_id IS NULL;
