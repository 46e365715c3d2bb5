-- Fleet-wide rate limits, concurrency limits and paused queues, enforced by canvas.claim
-- (functions/limits.sql). Three small tables: a claim reads them only to see that they are empty,
-- which is the normal case and costs next to nothing.

-- A task may start at most max_runs jobs in each window of per_seconds, windows aligned on the
-- epoch (a 100/m limit counts from :00 to :59 of each minute, by the jobs' started_at). The
-- counter of the current window lives in the row: a claim locks the row, reads and advances it,
-- so two claims at once cannot both take the last start of a window.
CREATE TABLE canvas.rate_limits (
    task          text        PRIMARY KEY CHECK (task <> ''),
    max_runs      integer     NOT NULL CHECK (max_runs BETWEEN 1 AND 1000000000),
    per_seconds   integer     NOT NULL CHECK (per_seconds IN (1, 60, 3600)),
    -- The window the counter counts (its index: floor(epoch / per_seconds)); NULL before the first claim.
    window_index  bigint,
    started       integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- At most max_running jobs of a queue, or of a task, hold the state 'running' at once (claimed
-- and not finished, prefetched ones included), across every worker.
CREATE TABLE canvas.concurrency_limits (
    scope         text        NOT NULL CHECK (scope IN ('queue', 'task')),
    name          text        NOT NULL CHECK (name <> ''),
    max_running   integer     NOT NULL CHECK (max_running BETWEEN 1 AND 1000000000),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name)
);

-- A paused queue claims nothing until it is resumed; the row outlives every worker.
CREATE TABLE canvas.paused_queues (
    queue         text        PRIMARY KEY CHECK (queue <> ''),
    paused_at     timestamptz NOT NULL DEFAULT now()
);

