-- The workers' least-privilege group role. Workers append rows to sink tables,
-- upsert their offsets and heartbeats, and stage re-deliveries in TEMP tables;
-- they run no DDL (tables and partitions are `db migrate`'s job) and never
-- UPDATE or DELETE sink rows (audit trails stay append-only).
-- `db migrate` also grants SELECT, INSERT on each sink table (and sets default
-- privileges in its schema) and creates a LOGIN member role for the workers
-- (SINKFLEET_PG_WORKER_USER).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'sinkfleet_worker') THEN
        CREATE ROLE sinkfleet_worker NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- roles are cluster-wide: another database's migration made it meanwhile
END
$$;

-- Connect, and create TEMP staging tables (sinkfleet/sink/postgres/writer.py).
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO sinkfleet_worker',
                   current_database());
END
$$;

-- No CREATE in public for everyone (PostgreSQL 15's default; older versions allowed it).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- sinkfleet's own tables: read, insert and upsert; no DELETE, no TRUNCATE, no DDL.
GRANT USAGE ON SCHEMA sinkfleet TO sinkfleet_worker;
GRANT SELECT, INSERT, UPDATE ON sinkfleet.consumer_offsets TO sinkfleet_worker;
GRANT SELECT, INSERT, UPDATE ON sinkfleet.workers TO sinkfleet_worker;
