-- Autovacuum for canvas.jobs, the hottest table: every job is inserted, updated twice (claimed,
-- finished; never HOT, since state is in the partial indexes' predicates) and deleted by the
-- pruner. What makes it urgent is the claim index: each claim leaves a dead entry at its front,
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
