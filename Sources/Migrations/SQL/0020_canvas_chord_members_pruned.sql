-- Set by the pruner on a chord whose members it deleted (functions/retention.sql), once its age
-- passed. canvas.retry of a member that failed the chord then leaves it failed: reopened, it
-- would hand its body a partial list of results, or, with a failed member gone, never finish.
-- A constant default: no table rewrite.
ALTER TABLE canvas.chords ADD COLUMN members_pruned boolean NOT NULL DEFAULT false;
