-- The demo domain: polling centres, voters, where each voter is registered, and which station
-- of that centre each voter votes at. Ids are the printed formats: 5-digit centres, 8-digit voters.

CREATE TABLE polling_center (
    center_id   integer PRIMARY KEY CHECK (center_id BETWEEN 10000 AND 99999),
    center_name text    NOT NULL CHECK (center_name <> '')
);

CREATE TABLE voter (
    voter_id   integer PRIMARY KEY CHECK (voter_id BETWEEN 10000000 AND 99999999),
    voter_name text    NOT NULL CHECK (voter_name <> '')
);

-- Each voter is registered at exactly one centre.
CREATE TABLE voter_registration (
    voter_id  integer PRIMARY KEY REFERENCES voter (voter_id) ON DELETE CASCADE,
    center_id integer NOT NULL REFERENCES polling_center (center_id) ON DELETE CASCADE
);
CREATE INDEX voter_registration_center_idx ON voter_registration (center_id, voter_id);

-- Recomputed from voter_registration: within a centre, voters ordered by name, 500 a station.
CREATE TABLE station_assignment (
    voter_id   integer PRIMARY KEY REFERENCES voter (voter_id) ON DELETE CASCADE,
    center_id  integer NOT NULL REFERENCES polling_center (center_id) ON DELETE CASCADE,
    station_id integer NOT NULL CHECK (station_id >= 1)
);
CREATE INDEX station_assignment_station_idx ON station_assignment (center_id, station_id);
