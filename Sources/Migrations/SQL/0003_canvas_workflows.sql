-- Canvases: group, chain, chord, starmap and error callbacks, expanded and advanced by SQL so the
-- rules are atomic and the same for every client. See docs/canvas.md.
--
-- A chord (and a group, which is a chord without a body) is a row in canvas.chords with a
-- `remaining` counter. Each member job carries the chord's id and its position. The transaction
-- that finishes a member decrements the counter; the one that takes it to zero enqueues the body
-- with the members' results in header order. It happens once, whatever crashes and retries do.

ALTER TABLE canvas.jobs
    ADD COLUMN parent_id bigint,
    -- The chord or group this job reports to, and its slot there.
    ADD COLUMN chord_id  bigint,
    ADD COLUMN position  integer,
    -- Links still to run after this job succeeds (canvases, in order); NULL when none.
    ADD COLUMN chain     jsonb,
    -- A signature to enqueue if this job fails for good.
    ADD COLUMN on_error  jsonb;

CREATE INDEX jobs_chord_idx ON canvas.jobs (chord_id, position) WHERE chord_id IS NOT NULL;

-- Chord ids come from the jobs' sequence, so `voteradmin result ID` needs no prefix.
CREATE TABLE canvas.chords (
    id          bigint      PRIMARY KEY DEFAULT nextval(pg_get_serial_sequence('canvas.jobs', 'id')),
    kind        text        NOT NULL CHECK (kind IN ('group', 'chord', 'root')),
    size        integer     NOT NULL CHECK (size >= 0),
    remaining   integer     NOT NULL CHECK (remaining >= 0),
    state       text        NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'succeeded', 'failed', 'cancelled')),
    -- The canvas to run with the results; NULL for a group and for a root.
    body        jsonb,
    -- Where this chord reports when done: {"chain": […], "chord_id": …, "position": …, "on_error": …}.
    context     jsonb       NOT NULL DEFAULT '{}',
    on_error    jsonb,
    -- A group's (or root's) list of results once done.
    result      jsonb,
    error       text,
    body_id     bigint,
    parent_id   bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- One run as canvas.finish saw it, for the follow-ups (chains, chords, callbacks, spawned work).
CREATE TYPE canvas.finished_run AS (
    id bigint, state text, retry_in double precision, chain jsonb, chord_id bigint, position integer,
    on_error jsonb, result jsonb, task text, error text, spawn jsonb
);

