"""Operator tools: topics, demo, replay, retention, lag."""
