"""A private three-node Kafka whose every inter-node path runs through a TCP fault proxy
(sinkfleet/dev/netproxy.py), so a test can isolate one broker from the others, or cut
one client off from every broker, without privileges.

Kafka clients (and brokers) connect to the address a listener ADVERTISES, so each path
gets a listener advertised at its proxy's port:

* ``C{s}`` (controller) and ``B{s}`` (replication) listeners on every node, one per
  SOURCE node s. Node s takes ``C{s}`` first in ``controller.listener.names`` and
  ``B{s}`` as its ``inter.broker.listener.name``: when it looks a leader up, it gets the
  leader's ``C{s}``/``B{s}`` address, which is advertised at the proxy (s → leader).
  Its static ``controller.quorum.voters`` point through the same proxies. (KRaft
  followers take the leader's address from BeginQuorumEpoch's leader endpoints, by
  the follower's own controller listener name: per-node voter addresses alone would
  be bypassed.)
* ``VIA``: one more client listener per node, advertised at a proxy per node: a client
  bootstrapped there (the "zombie" worker) reaches every broker through those proxies
  only; clients on ``PLAINTEXT`` (the node's port) go direct.

Ports 26xxx: below Linux's ephemeral range and apart from the shared stack's (19092)
and the other cluster tests' (27xxx, 28xxx). The rendered listeners go to each node's
``overrides.properties`` (sinkfleet/dev/stack/kafka_node.py), so `stack up` keeps them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sinkfleet.config import Settings, load_settings
from sinkfleet.dev.netproxy import ProxyThread
from sinkfleet.dev.stack import manager
from sinkfleet.dev.stack.kafka_node import OVERRIDES_FILE
from sinkfleet.dev.stack.process import port_open
from tests.support.catalogue import ROOT

HOST = "127.0.0.1"
BASE = 26000
NODES = (1, 2, 3)
# Faster than the defaults (30 s, 9 s), so that a run takes seconds, not minutes: a
# follower that fetched nothing for 6 s leaves the ISR; a broker whose heartbeats
# stopped for 6 s is fenced and loses its leaderships.
TIMING = {"replica.lag.time.max.ms": "6000", "broker.session.timeout.ms": "6000",
          "broker.heartbeat.interval.ms": "1000"}


def client_port(n: int) -> int:
    return BASE + n


def controller_port(n: int) -> int:  # node n's own C{n}: kafka-metadata-quorum asks it
    return BASE + 100 + n


def _real(kind: str, source: int, dest: int) -> int:
    """Where node ``dest`` listens for ``source`` (kind C or B)."""
    if kind == "C":
        return controller_port(dest) if source == dest else BASE + 100 + 10 * source + dest
    return BASE + 300 + 10 * source + dest


def _proxied(kind: str, source: int, dest: int) -> int:
    """The proxy (source → dest) of kind C or B."""
    return BASE + (200 if kind == "C" else 400) + 10 * source + dest


def via_real(n: int) -> int:
    return BASE + 500 + n


def via_proxy(n: int) -> int:
    return BASE + 600 + n


def all_ports() -> list[int]:
    ports = [p for n in NODES for p in (client_port(n), via_real(n), via_proxy(n))]
    for kind in ("C", "B"):
        for s in NODES:
            for d in NODES:
                ports.append(_real(kind, s, d))
                if s != d:
                    ports.append(_proxied(kind, s, d))
    return ports


def node_overrides(n: int) -> dict[str, str]:
    """Node ``n``'s listeners, advertised addresses and voters (pure)."""
    names = [f"C{s}" for s in NODES] + [f"B{s}" for s in NODES] + ["PLAINTEXT", "VIA"]
    listeners = [f"PLAINTEXT://{HOST}:{client_port(n)}", f"VIA://{HOST}:{via_real(n)}"]
    advertised = [f"PLAINTEXT://{HOST}:{client_port(n)}", f"VIA://{HOST}:{via_proxy(n)}"]
    for kind in ("C", "B"):
        for s in NODES:
            listeners.append(f"{kind}{s}://{HOST}:{_real(kind, s, n)}")
            port = _real(kind, s, n) if s == n else _proxied(kind, s, n)
            advertised.append(f"{kind}{s}://{HOST}:{port}")
    voters = [f"{d}@{HOST}:{_real('C', n, n) if d == n else _proxied('C', n, d)}"
              for d in NODES]
    return {
        "controller.quorum.voters": ",".join(voters),
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        # its own first: the raft client and the broker's controller channel use it
        "controller.listener.names": ",".join([f"C{n}"] + [f"C{s}" for s in NODES if s != n]),
        "inter.broker.listener.name": f"B{n}",
        "listener.security.protocol.map": ",".join(f"{x}:PLAINTEXT" for x in names),
        **TIMING,
    }


def proxy_name(kind: str, source: int, dest: int) -> str:
    return f"{kind}{source}->{dest}"


@dataclass
class NetCluster:
    """The running cluster: its settings (clients on PLAINTEXT) and its proxies."""

    settings: Settings
    proxies: ProxyThread
    isolated: set[int] = field(default_factory=set)

    @property
    def via_bootstrap(self) -> str:
        return ",".join(f"{HOST}:{via_proxy(n)}" for n in NODES)

    def paths_of(self, node: int) -> list[str]:
        """Every inter-node proxy from or to ``node``."""
        return [proxy_name(k, s, d) for k in ("C", "B") for s in NODES for d in NODES
                if s != d and node in (s, d)]

    def isolate(self, node: int) -> None:
        """Cut ``node`` off from the other nodes (both ways, controllers and replication);
        clients still reach it. Black-holed, as behind a dropped route."""
        self.proxies.cut(self.paths_of(node), blackhole=True)
        self.isolated.add(node)

    def reconnect(self, node: int) -> None:
        self.proxies.heal(self.paths_of(node))
        self.isolated.discard(node)

    def cut_via(self) -> None:
        """Every client on the VIA listener loses every broker (refused)."""
        self.proxies.cut([f"VIA{n}" for n in NODES])

    def heal_via(self) -> None:
        self.proxies.heal([f"VIA{n}" for n in NODES])


def start_net_cluster(state: Path, say: Callable[[str], None]) -> NetCluster:
    """Lay out, start and wait for the cluster (the proxies first: a node needs its
    quorum's). Call :func:`stop_net_cluster` whatever happens. Not in an event loop:
    `stack up` runs its own."""
    taken = [p for p in all_ports() if port_open(HOST, p)]
    if taken:
        raise AssertionError(f"ports {taken} are in use: the network fault tests need"
                             " 26001-26699 free")
    proxies = ProxyThread()
    try:
        for n in NODES:
            proxies.add(f"VIA{n}", (HOST, via_real(n)), via_proxy(n))
        for kind in ("C", "B"):
            for s in NODES:
                for d in NODES:
                    if s != d:
                        proxies.add(proxy_name(kind, s, d), (HOST, _real(kind, s, d)),
                                    _proxied(kind, s, d))
        for n in NODES:
            home = state / "kafka" / f"node-{n}"
            home.mkdir(parents=True, exist_ok=True)
            (home / OVERRIDES_FILE).write_text("".join(
                f"{k}={v}\n" for k, v in node_overrides(n).items()))
        asyncio.run(manager.up(cluster_settings(state), ["kafka"], say, brokers=3))
    except BaseException:
        proxies.close()
        raise
    return NetCluster(cluster_settings(state), proxies)


def cluster_settings(state: Path) -> Settings:
    """The cluster's settings, whatever SINKFLEET_KAFKA_* the environment has (the chaos
    report's private stack sets them)."""
    return load_settings(home=ROOT, state_dir=state, kafka_brokers=len(NODES),
                         kafka_bootstrap=",".join(f"{HOST}:{client_port(n)}" for n in NODES),
                         kafka_controller_port=controller_port(1))


def stop_net_cluster(cluster: NetCluster | None, state: Path,
                     say: Callable[[str], None]) -> None:
    try:
        manager.down(cluster_settings(state), ["kafka"], say)
    finally:
        if cluster is not None:
            cluster.proxies.close()
