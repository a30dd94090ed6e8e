-- Same-version conflicts of state sinks (docs/sink-modes.md, "Same-version conflicts"):
-- two updates of one id with the same version and different content. The winner
-- (latest producer timestamp, then greatest content hash) is the history row at that
-- version; every other content seen lands here, whole, so nothing is lost. One row per
-- losing content, so a replay or a re-delivery adds nothing; winner_hash follows the
-- winner. Order-independent: any delivery order leaves the same rows here (bar the
-- first-seen source coordinates and detected_at).
CREATE TABLE sinkfleet.state_conflicts (
    sink               text        NOT NULL,
    key                text        NOT NULL,  -- the id as a Kafka key (parts joined with ':')
    version            bigint      NOT NULL,
    loser_hash         bytea       NOT NULL,  -- SHA-256 of the content's canonical JSON
    loser_produced_at  timestamptz,           -- its latest producer (Kafka) timestamp
    loser              jsonb       NOT NULL,  -- the losing row, as its canonical JSON
    winner_hash        bytea       NOT NULL,
    winner_produced_at timestamptz,
    topic              text        NOT NULL,  -- where the losing content was first seen
    kafka_partition    integer     NOT NULL,
    kafka_offset       bigint      NOT NULL,
    detected_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, key, version, loser_hash)
);
CREATE INDEX state_conflicts_detected_idx ON sinkfleet.state_conflicts (sink, detected_at);

-- Workers record conflicts, raise timestamps, and drop the row of a content that wins
-- later (a later timestamp delivered afterwards).
GRANT SELECT, INSERT, UPDATE, DELETE ON sinkfleet.state_conflicts TO sinkfleet_worker;
