-- Periodic tasks without a single point of failure, and control of running work.
--
-- Beat: each firing is a row keyed on (schedule, fire time) under a primary key and committed
-- with the jobs it enqueues, so any number of beat processes fire each tick exactly once and no
-- leader is needed. The next fire time is computed by the beat (cron needs time-zone rules) and
-- stored with the firing.

CREATE TABLE canvas.schedules (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL UNIQUE CHECK (name <> ''),
    -- What to enqueue: a signature or any canvas, in the JSON form of docs/canvas.md.
    canvas        jsonb       NOT NULL,
    every_seconds double precision CHECK (every_seconds > 0),
    cron          text,
    time_zone     text        NOT NULL DEFAULT 'UTC',
    enabled       boolean     NOT NULL DEFAULT true,
    last_fire_at  timestamptz,
    next_fire_at  timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((every_seconds IS NULL) <> (cron IS NULL))
);
CREATE INDEX schedules_due_idx ON canvas.schedules (next_fire_at) WHERE enabled;

CREATE TABLE canvas.schedule_firings (
    schedule_id bigint      NOT NULL REFERENCES canvas.schedules (id) ON DELETE CASCADE,
    fire_at     timestamptz NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    canvas_id   bigint,
    -- Ticks that passed while no beat ran; they are fired once, here, not once each.
    missed      integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, fire_at)
);
