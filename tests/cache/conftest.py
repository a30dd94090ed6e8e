from tests.cache.support import cache_catalogue

__all__ = ["cache_catalogue"]
