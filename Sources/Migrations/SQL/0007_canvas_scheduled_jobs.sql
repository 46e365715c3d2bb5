-- Claims that never read what cannot run. A job due later is 'scheduled', not 'queued', so the
-- claim index holds runnable jobs only, keyed by queue: neither delayed jobs (every retry is one)
-- nor other queues' backlogs are read by a claim. Claims promote due scheduled jobs first, through
-- their own small index on run_at.

ALTER TABLE canvas.jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE canvas.jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'));

UPDATE canvas.jobs SET state = 'scheduled' WHERE state = 'queued' AND run_at > now();

DROP INDEX canvas.jobs_claim_idx;
-- Its columns are the claim's: one queue at a time, in the claim's ORDER BY.
CREATE INDEX jobs_queued_idx ON canvas.jobs (queue, priority, id) WHERE state = 'queued';
CREATE INDEX jobs_scheduled_idx ON canvas.jobs (run_at) WHERE state = 'scheduled';
