"""The publisher SDK."""

from sinkfleet.keys import record_key
from sinkfleet.producer.publisher import Publisher, SyncPublisher

__all__ = ["Publisher", "SyncPublisher", "record_key"]
