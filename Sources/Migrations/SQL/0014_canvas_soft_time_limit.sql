-- A job's soft time limit (options.soft_time_limit): seconds after which its task is told to stop,
-- before the hard time_limit kills its pool process. NULL leaves the task's own default.
-- A nullable column without a default: adding it rewrites nothing.
ALTER TABLE canvas.jobs ADD COLUMN soft_time_limit double precision CHECK (soft_time_limit > 0);
