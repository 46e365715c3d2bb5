-- The most connections a worker may hold on the server: its broker and maintenance threads, its
-- beat thread, and a pool process per slot (they connect only when a task uses the database).
-- Workers starting later count it as taken (canvas.reserve_connections). A default, not a
-- rewrite: rows of running older workers read 0.
ALTER TABLE canvas.workers ADD COLUMN connections integer NOT NULL DEFAULT 0 CHECK (connections >= 0);
