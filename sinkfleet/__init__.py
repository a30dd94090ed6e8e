"""sinkfleet: Avro over Kafka into PostgreSQL and Redis, by a fleet of stateless workers."""

from typing import TYPE_CHECKING, Any

from sinkfleet.config import Settings, load_settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.producer import Publisher, SyncPublisher

if TYPE_CHECKING:
    from sinkfleet.read import Reader

__all__ = ["Publisher", "Reader", "Settings", "SinkfleetError", "SyncPublisher",
           "load_settings"]


def __getattr__(name: str) -> Any:
    # The reader pulls in asyncpg and redis: publishing agents need neither.
    if name == "Reader":
        from sinkfleet.read import Reader

        return Reader
    raise AttributeError(f"module 'sinkfleet' has no attribute {name!r}")
__version__ = "0.1.0"
