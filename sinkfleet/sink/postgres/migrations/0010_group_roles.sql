-- Least privilege per process (docs/security.md, "Roles"). Each worker group gets its own
-- role from `db migrate` (sinkfleet/sink/postgres/group_roles.py), a member of the marker
-- role sinkfleet_group: it may write only its own sinks, and only its own group's rows of
-- the offsets and heartbeat tables (row-level security below). The roll-ups, the lag
-- exporter and readers get roles of their own.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['sinkfleet_group', 'sinkfleet_rollups', 'sinkfleet_exporter',
                             'sinkfleet_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object THEN
                NULL;  -- roles are cluster-wide: another database's migration made it
            END;
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO sinkfleet_group',
                   current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO sinkfleet_rollups, sinkfleet_exporter,'
                   ' sinkfleet_reader', current_database());
END
$$;

-- Which role carries which group, and the sinks it writes (kept by `db migrate`). The
-- policies below read it as the connected role: it names roles and sinks, no secret.
CREATE TABLE sinkfleet.group_roles (
    group_id  text   PRIMARY KEY,
    role_name text   NOT NULL UNIQUE,
    sinks     text[] NOT NULL DEFAULT '{}'
);

GRANT USAGE ON SCHEMA sinkfleet TO sinkfleet_group, sinkfleet_rollups, sinkfleet_exporter,
    sinkfleet_reader;
-- Every group: read versions, holds and the mapping; upsert offsets and heartbeats (only
-- its own rows: the policies); no DELETE, no TRUNCATE, no DDL.
GRANT SELECT ON sinkfleet.schema_versions, sinkfleet.group_holds, sinkfleet.group_roles
    TO sinkfleet_group;
GRANT SELECT, INSERT, UPDATE ON sinkfleet.consumer_offsets, sinkfleet.workers
    TO sinkfleet_group;
-- Roll-ups upsert their parts (never delete) and read the writer schemas.
GRANT SELECT ON sinkfleet.schema_versions TO sinkfleet_rollups;
GRANT SELECT, INSERT, UPDATE ON sinkfleet.rollup_metric_parts,
    sinkfleet.rollup_worker_event_parts TO sinkfleet_rollups;
GRANT SELECT ON sinkfleet.rollup_metrics, sinkfleet.rollup_worker_events TO sinkfleet_rollups;
-- The lag exporter reads heartbeats; readers read summaries (and, granted by
-- `db migrate`, every sink table).
GRANT SELECT ON sinkfleet.workers TO sinkfleet_exporter;
GRANT SELECT ON sinkfleet.rollup_metrics, sinkfleet.rollup_worker_events TO sinkfleet_reader;

-- Row-level security: a permissive policy keeps every role as its grants allow (the
-- owner bypasses RLS; the legacy sinkfleet_worker and operators' roles are unchanged),
-- and a restrictive one confines members of sinkfleet_group to their own group's rows
-- (state conflicts: their own sinks' rows). The join on pg_roles skips mapping rows of
-- dropped roles (pg_has_role would raise on a missing name).
ALTER TABLE sinkfleet.consumer_offsets ENABLE ROW LEVEL SECURITY;
CREATE POLICY granted ON sinkfleet.consumer_offsets USING (true) WITH CHECK (true);
CREATE POLICY own_group ON sinkfleet.consumer_offsets AS RESTRICTIVE TO sinkfleet_group
    USING (EXISTS (SELECT FROM sinkfleet.group_roles m
                     JOIN pg_catalog.pg_roles r ON r.rolname = m.role_name
                    WHERE m.group_id = consumer_offsets.group_id
                      AND pg_catalog.pg_has_role(r.oid, 'USAGE')));

ALTER TABLE sinkfleet.workers ENABLE ROW LEVEL SECURITY;
CREATE POLICY granted ON sinkfleet.workers USING (true) WITH CHECK (true);
CREATE POLICY own_group ON sinkfleet.workers AS RESTRICTIVE TO sinkfleet_group
    USING (EXISTS (SELECT FROM sinkfleet.group_roles m
                     JOIN pg_catalog.pg_roles r ON r.rolname = m.role_name
                    WHERE m.group_id = workers.group_id
                      AND pg_catalog.pg_has_role(r.oid, 'USAGE')));

ALTER TABLE sinkfleet.state_conflicts ENABLE ROW LEVEL SECURITY;
CREATE POLICY granted ON sinkfleet.state_conflicts USING (true) WITH CHECK (true);
CREATE POLICY own_sinks ON sinkfleet.state_conflicts AS RESTRICTIVE TO sinkfleet_group
    USING (EXISTS (SELECT FROM sinkfleet.group_roles m
                     JOIN pg_catalog.pg_roles r ON r.rolname = m.role_name
                    WHERE state_conflicts.sink = ANY (m.sinks)
                      AND pg_catalog.pg_has_role(r.oid, 'USAGE')));

-- `db migrate` no longer extends the legacy sinkfleet_worker's grants to tables created
-- later (ALTER DEFAULT PRIVILEGES): drop what earlier versions set. Partitions need no
-- grants of their own, rows reach them through their parent.
DO $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT DISTINCT n.nspname
               FROM pg_catalog.pg_default_acl d
               JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace,
                    aclexplode(d.defaclacl) a
              WHERE a.grantee = 'sinkfleet_worker'::regrole
                AND d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles
                                    WHERE rolname = current_user) LOOP
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON TABLES'
                       ' FROM sinkfleet_worker', s);
    END LOOP;
END
$$;
