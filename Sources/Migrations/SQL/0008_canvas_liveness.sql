-- Each worker states the terms on which it is presumed dead, and is rescued by those (not by the
-- rescuer's own settings). Rows of workers started before this default to the old fixed terms.
ALTER TABLE canvas.workers
    ADD COLUMN heartbeat_interval double precision NOT NULL DEFAULT 2 CHECK (heartbeat_interval > 0),
    ADD COLUMN rescue_after double precision NOT NULL DEFAULT 15 CHECK (rescue_after > 0);

-- Finds the chords inside a chord (cancel walks down a canvas through it).
CREATE INDEX chords_slot_idx ON canvas.chords (((context->>'chord_id')::bigint)) WHERE context ? 'chord_id';
