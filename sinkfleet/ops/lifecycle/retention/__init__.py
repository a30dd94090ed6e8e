"""Retention: plans, partition DDL, runs and the schedule (docs/retention.md)."""
