from tests.support.cache import cache_catalogue

__all__ = ["cache_catalogue"]
