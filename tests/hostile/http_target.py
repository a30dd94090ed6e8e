"""A worker's /metrics, /healthz and /readyz served by sinkfleet.http in a process of its
own, with a /metrics page as big as a large fleet's (~2.5 MB), so attack tests can
measure this process's memory. Prints the bound port on stdout, then serves until killed.

Limits come from the environment (SINKFLEET_HTTP_*), as a worker's do.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sinkfleet.config import load_settings
from sinkfleet.http import Health, Phase, route, serve
from sinkfleet.http_server import HttpLimits

SERIES = 25_000  # ~100 bytes a line: ~2.5 MB


class _Big(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("sinkfleet_committed_offset", "offset",
                                   labels=["group", "topic", "partition"])
        for i in range(SERIES):
            family.add_metric(["orders-group", f"orders.events.v{i % 50}", str(i)], i)
        yield family


async def main() -> None:
    registry = CollectorRegistry()
    registry.register(_Big())
    health = Health()
    health.phase = Phase.RUNNING
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    await serve("127.0.0.1", 0, lambda path, _: route(path, registry, health),
                bound.set_result, limits=HttpLimits.from_settings(load_settings()))
    print(await bound, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
