"""The cold archive: Avro container files of dropped partitions (docs/retention.md)."""
