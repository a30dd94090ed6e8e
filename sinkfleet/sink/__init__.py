"""Sinks: PostgreSQL writers per mode, Redis cache writers."""
