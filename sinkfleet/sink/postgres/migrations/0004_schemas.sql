-- Every version of every record family's Avro schema ever registered (by
-- `sinkfleet schemas register` and `db migrate`, after a compatibility check).
-- Single-object records name their writer schema by its CRC-64-AVRO
-- fingerprint; workers look fingerprints up here, so records written with any
-- registered version decode into the current reader schema.
CREATE TABLE sinkfleet.schema_versions (
    family        text        NOT NULL,
    version       integer     NOT NULL CHECK (version >= 1),
    fingerprint   bytea       NOT NULL UNIQUE CHECK (length(fingerprint) = 8),
    schema        text        NOT NULL CHECK (schema::jsonb IS NOT NULL),  -- the exact text
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (family, version)
);

-- Workers read versions; only `db migrate` / `schemas register` (the owner) add them.
GRANT SELECT ON sinkfleet.schema_versions TO sinkfleet_worker;
