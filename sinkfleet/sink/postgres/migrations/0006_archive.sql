-- Retention and the cold archive (`sinkfleet retention run`, `sinkfleet archive`,
-- docs/retention.md). One row per Avro container file written before a time
-- partition was dropped; the file and its JSON manifest live under
-- SINKFLEET_ARCHIVE_DIR, `path` is relative to it.
CREATE TABLE sinkfleet.archives (
    id           bigserial   PRIMARY KEY,
    sink         text        NOT NULL,
    table_schema text        NOT NULL,
    table_name   text        NOT NULL,
    partition    text        NOT NULL,
    time_column  text        NOT NULL,
    range_start  timestamptz NOT NULL,  -- the partition's bounds: [range_start, range_end)
    range_end    timestamptz NOT NULL CHECK (range_end > range_start),
    min_time     timestamptz,           -- the oldest and newest row (NULL: no rows)
    max_time     timestamptz,
    rows         bigint      NOT NULL CHECK (rows >= 0),
    bytes        bigint      NOT NULL CHECK (bytes >= 0),
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    codec        text        NOT NULL,
    path         text        NOT NULL UNIQUE,
    avro_schema  jsonb       NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    dropped_at   timestamptz,           -- the partition was dropped (same transaction)
    restored_at  timestamptz            -- the last `archive restore` that read this file
);
CREATE INDEX archives_sink_range_idx ON sinkfleet.archives (sink, range_start);

-- A partition retention has started to detach: recorded before the DETACH, removed
-- in the transaction that drops it, so a run that died in between is finished by
-- the next one (never a detached table forgotten, never a partition dropped twice).
CREATE TABLE sinkfleet.retention_pending (
    table_schema text        NOT NULL,
    partition    text        NOT NULL,
    sink         text        NOT NULL,
    range_start  timestamptz NOT NULL,
    range_end    timestamptz NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_schema, partition)
);
