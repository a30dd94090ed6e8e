"""The TCP fault proxy of the tests: sinkfleet/dev/netproxy.py (kept importable from
here for the tests that use it)."""

from sinkfleet.dev.netproxy import TcpProxy

__all__ = ["TcpProxy"]
