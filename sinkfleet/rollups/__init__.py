"""Roll-ups: per-minute and per-hour summaries of learning metrics and worker events.

A faust app (``sinkfleet rollups``) keeps event-time tumbling windows in changelog-backed
tables and writes them to PostgreSQL summary tables that outlive detail retention,
exactly once in effect across restarts (docs/rollups.md).
"""

from sinkfleet.rollups.families import FAMILIES, Family
from sinkfleet.rollups.windows import WINDOWS, absorb, plan_record, window_start

__all__ = ["FAMILIES", "WINDOWS", "Family", "absorb", "plan_record", "window_start"]
