-- Indexes for canvas.prune (functions/retention.sql), so that each of its batches reads only the
-- rows it deletes (and the few it must keep) instead of scanning a table that grows by tens of
-- thousands of rows a second. Finished jobs already have jobs_finished_idx (0002).

-- Finished chords in the order they age. Pending ones (the live canvases) are left out, so the
-- index stays small and is not touched while a chord counts down.
CREATE INDEX chords_finished_idx ON canvas.chords (finished_at) WHERE state <> 'pending';

-- Firings in the order they age; the primary key (schedule_id, fire_at) then finds whether a
-- later firing of the same schedule exists.
CREATE INDEX schedule_firings_fired_idx ON canvas.schedule_firings (fired_at);
