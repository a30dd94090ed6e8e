"""Backup and restore: pg_dump + catalogue + offsets snapshot + manifest (docs/backup.md)."""
