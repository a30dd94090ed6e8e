"""sinkfleet: Avro over Kafka into PostgreSQL and Redis, by a fleet of stateless workers."""

from sinkfleet.config import Settings, load_settings
from sinkfleet.errors import SinkfleetError
from sinkfleet.producer import Publisher, SyncPublisher

__all__ = ["Publisher", "Settings", "SinkfleetError", "SyncPublisher", "load_settings"]
__version__ = "0.1.0"
