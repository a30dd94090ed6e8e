"""Redis caches derived from PostgreSQL writes: ``latest`` state and ``recent`` rows.

Layout and semantics: docs/sink-modes.md ("Redis caches").
"""

from sinkfleet.cache.layout import CacheLayout, cache_layouts, cached_sinks
from sinkfleet.cache.rebuild import Rebuilder, RebuildResult
from sinkfleet.cache.writer import CacheWriter

__all__ = ["CacheLayout", "CacheWriter", "RebuildResult", "Rebuilder", "cache_layouts",
           "cached_sinks"]
