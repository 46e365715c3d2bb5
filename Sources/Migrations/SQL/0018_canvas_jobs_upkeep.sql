-- Upkeep of canvas.jobs, the hottest table. Autovacuum first: every job is inserted, updated
-- twice (claimed, finished; never HOT, since state is in the partial indexes' predicates) and
-- deleted by the pruner. What makes it urgent is the claim index: each claim leaves a dead entry at its front,
-- where every claim's scan starts, and only VACUUM removes them (see Sources/PGCanvas/Worker/
-- Vacuumer.swift, which has workers that may vacuum the table do it themselves, at the same
-- threshold). The defaults wait for a fifth of the table to be dead and throttle the run to
-- 200 cost units per 2 ms; here 10,000 dead rows plus 5 % of the live ones, ten times the
-- budget. How often autovacuum looks at all is the server's autovacuum_naptime (a minute by
-- default, not a table setting): see docs/operations.md.
ALTER TABLE canvas.jobs SET (
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_limit = 2000
);

-- The pruner reads finished jobs in (finished_at, id) order from its cursor, LIMIT a batch
-- (functions/retention.sql). On (finished_at) alone the planner has to sort for the id, and
-- when the statistics were taken before any job finished (a new table, a queue that just
-- started) it plans a sort of every finished job below the cutoff for each batch, so a batch
-- costs more the further the pruner is behind (with the DELETE's plan, see retention.sql, 2.8 s
-- for 5,000 of 50,000). With the id in the index the scan stops after its batch, whatever the
-- statistics say. The index is built under the migration's lock: on a table holding millions
-- of finished jobs, writes wait for the build (seconds per million rows).
DROP INDEX canvas.jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON canvas.jobs (finished_at, id) WHERE state IN ('succeeded', 'failed', 'cancelled');
