-- Each assignment carries the voter's name, so printing a station reads its 500 names from the
-- station index's own rows (stored in that order by the refresh) instead of probing `voter`'s
-- primary key 500 times: a million probes at a million voters cost 3.5 CPU-s of the server's
-- time, now 0.5. The refresh has the name in hand already (it sorts by it). A trigger keeps the
-- copy current when a voter is renamed, as printing by join did: the renamed voter keeps its
-- place until the next refresh, and prints under the new name.
DO $migration$
DECLARE
    home text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = 'station_assignment'::regclass);
BEGIN
    ALTER TABLE station_assignment ADD COLUMN voter_name text COLLATE "und-x-icu";
    UPDATE station_assignment s SET voter_name = v.voter_name FROM voter v WHERE v.voter_id = s.voter_id;
    ALTER TABLE station_assignment ALTER COLUMN voter_name SET NOT NULL;

    EXECUTE format($create$
        CREATE FUNCTION %1$I.station_assignment_follow_rename() RETURNS trigger
        LANGUAGE plpgsql SET search_path = %1$I, pg_temp
        AS $body$
        BEGIN
            UPDATE station_assignment SET voter_name = NEW.voter_name WHERE voter_id = NEW.voter_id;
            RETURN NULL;
        END
        $body$
    $create$, home);
    EXECUTE format($create$
        CREATE TRIGGER voter_renamed AFTER UPDATE OF voter_name ON %1$I.voter
            FOR EACH ROW WHEN (OLD.voter_name IS DISTINCT FROM NEW.voter_name)
            EXECUTE FUNCTION %1$I.station_assignment_follow_rename()
    $create$, home);

    -- Migration 0017's function, which now stores the name too.
    EXECUTE format($create$
        CREATE OR REPLACE FUNCTION %1$I.refresh_station_assignments(p_voters_per_station integer) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = %1$I, pg_temp SET work_mem = '256MB'
        AS $body$
        DECLARE
            assigned bigint;
        BEGIN
            IF p_voters_per_station IS NULL OR p_voters_per_station < 1 THEN
                RAISE EXCEPTION 'voters per station must be at least 1, not %%', p_voters_per_station;
            END IF;
            -- Readers wait on the lock and never see the table without its constraints.
            LOCK station_assignment IN ACCESS EXCLUSIVE MODE;
            ALTER TABLE station_assignment DROP CONSTRAINT station_assignment_voter_id_fkey,
                DROP CONSTRAINT station_assignment_center_id_fkey, DROP CONSTRAINT station_assignment_pkey;
            DROP INDEX station_assignment_station_idx;
            TRUNCATE station_assignment;
            INSERT INTO station_assignment (voter_id, center_id, station_id, voter_position, voter_name)
            SELECT voter_id, center_id, ((position - 1) / p_voters_per_station + 1)::integer, position, voter_name
            FROM (SELECT r.voter_id, r.center_id, v.voter_name,
                         row_number() OVER (PARTITION BY r.center_id ORDER BY v.voter_name, v.voter_id)::integer
                             AS position
                  FROM voter_registration r JOIN voter v USING (voter_id)) ranked;
            GET DIAGNOSTICS assigned = ROW_COUNT;
            -- The definitions of migrations 0001 and 0017.
            ALTER TABLE station_assignment ADD CONSTRAINT station_assignment_pkey PRIMARY KEY (voter_id);
            CREATE INDEX station_assignment_station_idx ON station_assignment (center_id, station_id, voter_position);
            ALTER TABLE station_assignment
                ADD CONSTRAINT station_assignment_voter_id_fkey
                    FOREIGN KEY (voter_id) REFERENCES voter (voter_id) ON DELETE CASCADE,
                ADD CONSTRAINT station_assignment_center_id_fkey
                    FOREIGN KEY (center_id) REFERENCES polling_center (center_id) ON DELETE CASCADE;
            ANALYZE station_assignment;
            RETURN assigned;
        END
        $body$
    $create$, home);
END
$migration$;
