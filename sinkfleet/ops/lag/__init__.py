"""Consumer lag: collection from Kafka, Burrow-style status, exporter and CLI."""
