-- Replays (`sinkfleet replay apply`): a hold asks every worker of a group to store
-- what it consumed and leave the group until the hold is released, so the group's
-- offsets can move without a live member overwriting them.
CREATE TABLE sinkfleet.group_holds (
    group_id text        PRIMARY KEY,
    reason   text        NOT NULL,
    held_at  timestamptz NOT NULL DEFAULT now()
);

-- Every applied replay, for operators and for the lag dashboard's replay marks.
CREATE TABLE sinkfleet.replays (
    id         bigserial   PRIMARY KEY,
    group_id   text        NOT NULL,
    records    bigint      NOT NULL,  -- records re-read (negative: skipped)
    partitions integer     NOT NULL,
    plan       jsonb       NOT NULL,  -- [{topic, partition, from, to}]
    digest     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replays_group_applied_idx ON sinkfleet.replays (group_id, applied_at);

-- Workers read holds; only operators (the owner role) set them.
GRANT SELECT ON sinkfleet.group_holds TO sinkfleet_worker;
