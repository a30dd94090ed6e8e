"""`sinkfleet serve`: the HTTP read service over the query model (docs/http-read-service.md)."""

from sinkfleet.read.serve.app import ReadService, ServeOptions

__all__ = ["ReadService", "ServeOptions"]
