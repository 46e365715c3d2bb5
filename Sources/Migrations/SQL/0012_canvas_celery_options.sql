-- What a Celery user reaches for (docs/celery.md): keyword arguments, success callbacks, expiry,
-- results that are not kept, unique jobs, and why a job failed, for its error callbacks.
-- Columns a job does not use stay NULL (or take a constant default), so plain jobs cost nothing
-- more to insert or claim.

ALTER TABLE canvas.jobs
    -- Keyword arguments beside the positional ones; NULL when there are none.
    ADD COLUMN kwargs        jsonb CHECK (jsonb_typeof(kwargs) = 'object'),
    -- Success callbacks (a list of canvases), each enqueued with the result once the job succeeds.
    ADD COLUMN link          jsonb,
    -- A job not started by then is cancelled with reason "expired".
    ADD COLUMN expires_at    timestamptz,
    -- The result is not stored (nor handed to a chord: its slot gets null).
    ADD COLUMN ignore_result boolean NOT NULL DEFAULT false,
    -- At most one job per key waiting or running; with unique_for, none enqueued within that many
    -- seconds of another either (canvas.unique_match).
    ADD COLUMN unique_key    text,
    ADD COLUMN unique_for    double precision CHECK (unique_for >= 0),
    -- The kind of error that failed the job (TimeLimitExceeded, WorkerLostError, TaskRevokedError,
    -- or the task's own error type), for its error callbacks and for `voteradmin result`.
    ADD COLUMN error_type    text;

ALTER TYPE canvas.finished_run ADD ATTRIBUTE link jsonb;

-- Race-free under concurrent enqueue whatever the isolation level: two jobs with one key cannot
-- both be waiting or running.
CREATE UNIQUE INDEX jobs_unique_active_idx ON canvas.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running');
-- The newest jobs of a key first, for unique_for windows.
CREATE INDEX jobs_unique_key_idx ON canvas.jobs (unique_key, id) WHERE unique_key IS NOT NULL;
-- Jobs that may expire before they start; the claim and maintenance probe it (canvas.expire_due).
CREATE INDEX jobs_expiring_idx ON canvas.jobs (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('scheduled', 'queued');
