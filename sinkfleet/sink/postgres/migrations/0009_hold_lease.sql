-- A group hold is a lease: `replay apply --stop-fleet` sets expires_at a few seconds
-- ahead and renews it while it runs; workers ignore a hold once it has expired, so a
-- killed command cannot hold its group forever. `holder` names the command holding it
-- (host:pid:token), so a second replay cannot take over or release a live hold.
-- Holds written without a lease (older sinkfleet versions) keep the old meaning: they
-- last until deleted.
ALTER TABLE sinkfleet.group_holds
    ADD COLUMN expires_at timestamptz NOT NULL DEFAULT 'infinity',
    ADD COLUMN holder     text;
