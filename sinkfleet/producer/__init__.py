"""The publisher SDK."""

from sinkfleet.producer.publisher import Publisher, SyncPublisher, record_key

__all__ = ["Publisher", "SyncPublisher", "record_key"]
