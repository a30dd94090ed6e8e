"""The read API over the catalogue's sinks: Redis for hot reads, PostgreSQL for the rest."""

from sinkfleet.read.query import MAX_LIMIT, Filter, Page, Query, QueryError, parse_filter
from sinkfleet.read.reader import CacheStats, Reader

__all__ = ["MAX_LIMIT", "CacheStats", "Filter", "Page", "Query", "QueryError", "Reader",
           "parse_filter"]
