-- What a job spawned (its chain's next links, the canvases it enqueued) points back to it through
-- parent_id; `voteradmin enqueue --wait` follows that to wait for everything a task started.
CREATE INDEX jobs_parent_idx ON canvas.jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX chords_parent_idx ON canvas.chords (parent_id) WHERE parent_id IS NOT NULL;
