-- sinkfleet's own bookkeeping, beside the sink tables.
CREATE SCHEMA IF NOT EXISTS sinkfleet;

-- The source of truth for consumer positions: written in the same transaction
-- as the rows, so a crash can never leave rows without offsets or the reverse.
CREATE TABLE sinkfleet.consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
