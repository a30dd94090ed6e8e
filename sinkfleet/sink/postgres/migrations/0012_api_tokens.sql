-- Bearer tokens of the HTTP read service (`sinkfleet serve`, docs/http-read-service.md).
-- Only a token's SHA-256 is kept (a token is 256 random bits: a fast hash is enough, and
-- a stolen table grants nothing); each token reads as one tenant. `token_id` is a public
-- handle for listing and revoking. The service logs in as a member of sinkfleet_serve:
-- a reader (tenant sinks through their tenant views only) that may also look tokens up.
CREATE TABLE sinkfleet.api_tokens (
    token_sha256 bytea       PRIMARY KEY CHECK (length(token_sha256) = 32),
    token_id     text        NOT NULL UNIQUE,
    tenant       text        NOT NULL CHECK (tenant <> ''),
    note         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'sinkfleet_serve') THEN
        BEGIN
            CREATE ROLE sinkfleet_serve NOLOGIN;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- roles are cluster-wide: another database's migration made it
        END;
    END IF;
END
$$;
GRANT sinkfleet_reader TO sinkfleet_serve;
GRANT SELECT ON sinkfleet.api_tokens TO sinkfleet_serve;
