-- Live workers report here every few seconds, so operators (the dashboard,
-- `sinkfleet fleet`, scale advice) see the fleet without scraping each process.
CREATE TABLE sinkfleet.workers (
    worker_id     text        PRIMARY KEY,
    group_id      text        NOT NULL,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    metrics_url   text,
    state         text        NOT NULL,
    assigned      integer     NOT NULL DEFAULT 0,
    consumed      bigint      NOT NULL DEFAULT 0,
    stored        bigint      NOT NULL DEFAULT 0,
    dead_lettered bigint      NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_group_heartbeat_idx ON sinkfleet.workers (group_id, heartbeat_at);
