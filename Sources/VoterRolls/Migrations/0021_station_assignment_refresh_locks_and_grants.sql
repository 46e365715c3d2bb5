-- Migration 0020's refresh, corrected after review:
-- * It locks voter and polling_center before station_assignment. Dropping the old table drops
--   its foreign keys' triggers on those two, which takes them in ACCESS EXCLUSIVE mode; taken
--   only then, after the 2.4 s build, a transaction that had read voter and went on to
--   station_assignment (a rename's trigger, a cascading delete, a report) deadlocked with it.
--   Now the refresh waits for such a transaction before it holds anything it needs.
-- * It gives the new table the old one's grants exactly: what the owner's default privileges
--   gave the new table is revoked first (a privilege revoked on the old table came back), and a
--   role whose name needs quoting is no longer quoted twice (which failed the whole refresh).
DO $migration$
DECLARE
    home text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = 'station_assignment'::regclass);
BEGIN
    EXECUTE format($create$
        CREATE OR REPLACE FUNCTION %1$I.refresh_station_assignments(p_voters_per_station integer) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = %1$I, pg_temp
            SET work_mem = '256MB' SET maintenance_work_mem = '256MB'
            -- The default (0.1) prices each row a parallel worker hands on at a tenth of a page
            -- read, which outweighs sorting a million names by ICU rules in one process: the
            -- planner chose one process, 3.7 s against 2.4 s in three.
            SET parallel_tuple_cost = 0.01
        AS $body$
        DECLARE
            assigned bigint;
            acl aclitem[];
            g record;
        BEGIN
            IF p_voters_per_station IS NULL OR p_voters_per_station < 1 THEN
                RAISE EXCEPTION 'voters per station must be at least 1, not %%', p_voters_per_station;
            END IF;
            -- Readers wait on the lock and never see a table without its constraints. Dropping the
            -- old table drops its foreign keys' triggers on voter and polling_center, which takes
            -- those tables too: they are locked first, in the order a rename or a cascading delete
            -- takes them (the parent, then station_assignment), so neither can come between.
            LOCK voter, polling_center, station_assignment IN ACCESS EXCLUSIVE MODE;
            SELECT c.relacl INTO acl FROM pg_class c WHERE c.oid = 'station_assignment'::regclass;
            CREATE TABLE station_assignment_next AS
            SELECT voter_id, center_id, ((position - 1) / p_voters_per_station + 1)::integer AS station_id,
                   position AS voter_position, voter_name
            FROM (SELECT r.voter_id, r.center_id, v.voter_name,
                         row_number() OVER (PARTITION BY r.center_id ORDER BY v.voter_name, v.voter_id)::integer
                             AS position
                  FROM voter_registration r JOIN voter v USING (voter_id)) ranked;
            GET DIAGNOSTICS assigned = ROW_COUNT;
            DROP TABLE station_assignment;
            ALTER TABLE station_assignment_next RENAME TO station_assignment;
            -- The definitions of migrations 0001, 0017 and 0019, in one pass over the rows.
            ALTER TABLE station_assignment
                ALTER COLUMN voter_id SET NOT NULL, ALTER COLUMN center_id SET NOT NULL,
                ALTER COLUMN station_id SET NOT NULL, ALTER COLUMN voter_position SET NOT NULL,
                ALTER COLUMN voter_name SET NOT NULL,
                ADD CONSTRAINT station_assignment_station_id_check CHECK (station_id >= 1),
                ADD CONSTRAINT station_assignment_voter_position_check CHECK (voter_position >= 1),
                ADD CONSTRAINT station_assignment_pkey PRIMARY KEY (voter_id);
            CREATE INDEX station_assignment_station_idx ON station_assignment (center_id, station_id, voter_position);
            ALTER TABLE station_assignment
                ADD CONSTRAINT station_assignment_voter_id_fkey
                    FOREIGN KEY (voter_id) REFERENCES voter (voter_id) ON DELETE CASCADE,
                ADD CONSTRAINT station_assignment_center_id_fkey
                    FOREIGN KEY (center_id) REFERENCES polling_center (center_id) ON DELETE CASCADE;
            -- The old table's grants, exactly: what the owner's default privileges gave the new one
            -- is taken back first (regrole's text is already quoted where a name needs it).
            FOR g IN SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) a
                     WHERE c.oid = 'station_assignment'::regclass AND a.grantee <> c.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON station_assignment FROM %%s',
                               CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
            END LOOP;
            FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable FROM aclexplode(acl) a
                     WHERE a.grantee <> (SELECT c.relowner FROM pg_class c WHERE c.oid = 'station_assignment'::regclass)
            LOOP
                EXECUTE format('GRANT %%s ON station_assignment TO %%s%%s', g.privilege_type,
                               CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
                               CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
            ANALYZE station_assignment;
            RETURN assigned;
        END
        $body$
    $create$, home);
END
$migration$;
