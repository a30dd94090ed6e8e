"""PostgreSQL: migrations, partitions, writers, the offsets table."""
