"""Network faults of a real three-broker cluster (its own, on ports 26xxx; PostgreSQL and
Redis from the shared stack), made by TCP proxies (sinkfleet/dev/netproxy.py) on the
paths between the brokers and between one worker and the brokers
(tests/chaos/network_cluster.py):

* a worker cut off from Kafka, not from PostgreSQL: its partitions move, and its late
  batch is refused by the offsets fence in PostgreSQL (nothing of it written);
* one broker isolated from the other two until it has left every ISR, then healed
  until it is back in every ISR, under an acks=all publisher and two workers.

Both end with the chaos suite's checks: every acknowledged record stored exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings
from tests.chaos.cluster_scenarios import assert_exact
from tests.chaos.network_cluster import NetCluster, start_net_cluster, stop_net_cluster
from tests.chaos.network_scenarios import isolated_broker, open_net_catalogue, zombie_worker
from tests.chaos.support import ChaosCatalogue, drop_chaos_catalogue
from tests.support.catalogue import without_kafka_layout_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def _say(message: str) -> None:
    print(f"[net-cluster] {message}")


@pytest.fixture(scope="module")
def net_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetCluster]:
    state = tmp_path_factory.mktemp("net-cluster") / "state"
    cluster = None
    with without_kafka_layout_env():
        try:
            cluster = start_net_cluster(state, _say)
            yield cluster
        finally:
            stop_net_cluster(cluster, state, _say)


@pytest_asyncio.fixture
async def net_catalogue(stack: Settings, net_cluster: NetCluster, tmp_path: Path
                        ) -> AsyncIterator[Callable[..., Any]]:
    made: list[ChaosCatalogue] = []

    async def factory(**kwargs: Any) -> ChaosCatalogue:
        cc = await open_net_catalogue(tmp_path, stack, net_cluster, **kwargs)
        made.append(cc)
        return cc

    yield factory
    for cc in made:
        await drop_chaos_catalogue(cc)


async def test_a_worker_cut_off_from_kafka_is_fenced_by_postgresql(
        net_catalogue: Any, net_cluster: NetCluster, tmp_path: Path) -> None:
    cc = await net_catalogue()
    # ~30 s of records: the owner alone, the zombie joins, is cut for ~15 s, rejoins
    result = await zombie_worker(cc, tmp_path, 6_000, rate=200, seed=601, cluster=net_cluster)
    assert result.ok, result.explain()
    assert result.recovery is not None and result.recovery < 15, result.explain()
    print(result.fault, f"recovery {result.recovery}", result.notes, f"{result.seconds:.1f}s")


async def test_a_broker_isolated_until_out_of_the_isr_loses_and_doubles_nothing(
        net_catalogue: Any, net_cluster: NetCluster, tmp_path: Path) -> None:
    cc = await net_catalogue()
    result = await isolated_broker(cc, tmp_path, 6_000, rate=250, seed=602,
                                   cluster=net_cluster)
    assert_exact(result, 6_000)  # the independent history check included
    assert result.recovery is not None and result.recovery < 30, result.explain()
    print(result.fault, f"recovery {result.recovery}", result.notes, f"{result.seconds:.1f}s")
