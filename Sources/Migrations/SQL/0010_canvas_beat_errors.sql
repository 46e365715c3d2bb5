-- A schedule whose firing fails (its canvas is refused, an enqueue raises) no longer stops the
-- others: the beat records why, on the schedule for `voteradmin schedule list` and on the tick's
-- firing row, and tries again at the schedule's next tick.

ALTER TABLE canvas.schedules
    ADD COLUMN last_error    text,
    ADD COLUMN last_error_at timestamptz;

-- A failed tick keeps its row (canvas_id NULL, error set): the tick was handled, once, and is not
-- fired again by another beat.
ALTER TABLE canvas.schedule_firings ADD COLUMN error text;

-- The interval range `voteradmin schedule add --every` accepts (0.01 s to 3,650 days), so that no
-- next time overflows a timestamp. NOT VALID: rows added before are not checked.
ALTER TABLE canvas.schedules ADD CONSTRAINT schedules_every_seconds_range
    CHECK (every_seconds BETWEEN 0.01 AND 315360000) NOT VALID;
