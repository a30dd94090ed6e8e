"""The local stack: Kafka from Maven jars, PostgreSQL and Redis, on loopback."""
