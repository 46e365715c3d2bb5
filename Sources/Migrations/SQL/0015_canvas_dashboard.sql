-- Indexes for the dashboard (Sources/Dashboard), so that its lists stay fast with millions of
-- finished jobs. Both are partial: a job that succeeds (nearly all of them) never enters them, so
-- the claim and finish paths pay nothing for them.

-- Failed and cancelled jobs, newest first: the overview's latest failures and the jobs list
-- filtered by either state (with a task or queue filter on top, still only these rows).
CREATE INDEX jobs_unsuccessful_idx ON canvas.jobs (state, id) WHERE state IN ('failed', 'cancelled');

-- Pending chords and groups: the overview's count and the metric celery_chords_pending. A chord
-- counting down changes only `remaining`, which no index holds, so its updates stay HOT.
CREATE INDEX chords_pending_idx ON canvas.chords (kind) WHERE state = 'pending';

-- Jobs finished per minute and task, as workers report them with their heartbeats
-- (canvas.heartbeat's p_counts): the dashboard's chart and last-hour counts read at most a few
-- thousand of these rows, never the finished jobs themselves, which a burn-down adds by the
-- million. Rows older than a day are deleted by the heartbeats that add new ones.
CREATE TABLE canvas.finish_counts (
    minute    timestamptz NOT NULL,
    task      text        NOT NULL,
    succeeded bigint      NOT NULL DEFAULT 0,
    failed    bigint      NOT NULL DEFAULT 0,
    retried   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, task)
);
