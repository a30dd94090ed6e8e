-- Roll-ups (`sinkfleet rollups`, docs/rollups.md): per-minute and per-hour summaries
-- that outlive detail retention. The faust app writes one "part" row per window, key
-- and source partition, and sets it to its changelog-backed state (never adds to it);
-- a row only moves forward (a later last_offset, or final at the same offset), so a
-- window written again after a restart changes nothing. The views add the parts up.
-- window_size is a date_trunc field: 'minute', 'hour' (and 'day', 'week' for cascades).

CREATE TABLE sinkfleet.rollup_metric_parts (
    topic           text        NOT NULL,
    window_size     text        NOT NULL CHECK (window_size IN ('minute', 'hour', 'day', 'week')),
    window_start    timestamptz NOT NULL,
    metric_type     text        NOT NULL,
    field           text        NOT NULL,  -- a numeric field of metric_data; '*' counts records
    kafka_partition integer     NOT NULL,
    count           bigint      NOT NULL,
    sum             numeric,               -- exact, as numeric sums over the jsonb values
    min             numeric,
    max             numeric,
    last_offset     bigint      NOT NULL,  -- the last source offset absorbed
    final           boolean     NOT NULL DEFAULT false,  -- the window has closed
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, window_size, window_start, metric_type, field, kafka_partition)
);

CREATE VIEW sinkfleet.rollup_metrics AS
SELECT topic, window_size, window_start, metric_type, field,
       sum(count)::bigint AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max,
       sum(sum) / nullif(sum(count), 0) AS avg, bool_and(final) AS final
  FROM sinkfleet.rollup_metric_parts
 GROUP BY topic, window_size, window_start, metric_type, field;

CREATE TABLE sinkfleet.rollup_worker_event_parts (
    topic           text        NOT NULL,
    window_size     text        NOT NULL CHECK (window_size IN ('minute', 'hour', 'day', 'week')),
    window_start    timestamptz NOT NULL,
    worker_id       text        NOT NULL,
    job_id          text        NOT NULL,  -- '' when the event has none
    event_type      text        NOT NULL,
    kafka_partition integer     NOT NULL,
    count           bigint      NOT NULL,
    last_offset     bigint      NOT NULL,
    final           boolean     NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, window_size, window_start, worker_id, job_id, event_type,
                 kafka_partition)
);

CREATE VIEW sinkfleet.rollup_worker_events AS
SELECT topic, window_size, window_start, worker_id, nullif(job_id, '') AS job_id, event_type,
       sum(count)::bigint AS count, bool_and(final) AS final
  FROM sinkfleet.rollup_worker_event_parts
 GROUP BY topic, window_size, window_start, worker_id, job_id, event_type;

-- The roll-up app may run as the workers' least-privilege role: it upserts parts, and
-- never deletes (retention of summaries is an operator's job).
GRANT SELECT, INSERT, UPDATE ON sinkfleet.rollup_metric_parts,
                                sinkfleet.rollup_worker_event_parts TO sinkfleet_worker;
GRANT SELECT ON sinkfleet.rollup_metrics, sinkfleet.rollup_worker_events TO sinkfleet_worker;
