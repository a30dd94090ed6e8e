"""The read API over the catalogue's sinks: Redis for hot reads, PostgreSQL for the rest."""

from sinkfleet.read.reader import CacheStats, Reader

__all__ = ["CacheStats", "Reader"]
