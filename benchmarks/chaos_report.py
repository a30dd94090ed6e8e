"""Chaos report: the LONG chaos profile at scale, as the table kept in the README.

Every fault of ``tests/chaos/scenarios.py`` runs on its own fresh catalogue (experience
events, workflow states and audit entries under unique names, one worker group), with
``--records / 8`` records each (default 200,000 in all) published at ``--rate`` (at most
a tenth of them per second, so that every fault lands while records flow):

  kill -9 storm            two workers, one killed (SIGKILL) and restarted every 1-2 s
  rebalance storm          workers join and leave (SIGTERM) every ~2 s, then two finish
  PostgreSQL restart       the stack's PostgreSQL stopped (fast shutdown) for 1 s
  Kafka broker restart     the stack's broker stopped for 1 s
  Redis restart            the stack's Redis stopped for 1 s (no persistence: emptied)
  Redis flush              FLUSHALL under load
  1 % poison               undecodable bytes and rows no column takes, among good records
  PostgreSQL cut mid-COPY  every PostgreSQL connection cut three times by a TCP proxy
  zombie                   a worker cut off from Kafka (not PostgreSQL) holding a batch:
                           its partitions move, its late batch is refused by the fence
  broker isolation         one broker of three cut off from the other two until it left
                           every ISR, then healed (a 3-node cluster of its own, 26xxx)

and the cluster faults, on a private three-broker Kafka (``tests/chaos/cluster.py``,
started for them; topics with three replicas, two in sync), each also checked by the
independent history check (``tests/chaos/history.py``):

  leader-kill              the leader of a partition killed (SIGKILL), restarted later
  controller-kill          the active KRaft controller killed (SIGKILL), restarted later
  rolling-restart          each broker stopped and started, the next once all are in sync
  isr-below-min            min.insync.replicas 3 and a broker killed: acks=all refused

then the hostile inputs (``tests/hostile/inputs.py``): every hostile record we know how
to make, among good ones, into one worker; a table says per input what it had to become
(stored exactly, or dead-lettered at a stage) and what it became, and whether the worker
stayed alive with nothing lost, doubled or changed (``--no-hostile`` skips it).

and the table says, per fault: records acknowledged (all topics, tombstones and poison
included), lost (acknowledged, not stored), duplicated (stored twice, or stored without
being acknowledged), dead letters expected/actual, and recovery: seconds from the heal
until every partition that had records waiting was stored again ("-": no outage). A
fault passes ("ok") when nothing is lost or doubled, every state id is at its newest
undeleted version, every audit chain verifies, the stored offsets equal the log end,
every stopped worker exited 0 and, for Redis faults, the caches equal PostgreSQL again.

The faults restart servers and FLUSHALL Redis, so by default the report starts a
private stack (free ports, a temporary SINKFLEET_STATE_DIR) and stops it at the end;
``--env-stack`` uses the stack the environment points to instead — never a shared one.

Usage::

    .venv/bin/python benchmarks/chaos_report.py [--records 200000] [--rate 2500]
        [--only FAULT ...] [--env-stack] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the scenarios live in the test suite
    sys.path.insert(0, str(ROOT))

from sinkfleet.config import Settings, load_settings  # noqa: E402
from sinkfleet.dev.stack import manager  # noqa: E402
from tests.chaos import cluster_scenarios, network_scenarios, scenarios  # noqa: E402
from tests.chaos.cluster import (  # noqa: E402
    REPORT_PORTS,
    open_cluster_catalogue,
    start_cluster,
    stop_cluster,
)
from tests.chaos.network_cluster import (  # noqa: E402
    NetCluster,
    start_net_cluster,
    stop_net_cluster,
)
from tests.chaos.scenarios import FaultResult  # noqa: E402
from tests.chaos.support import drop_chaos_catalogue, open_chaos_catalogue  # noqa: E402
from tests.hostile.inputs import HostileResult, run_hostile_inputs  # noqa: E402
from tests.support.catalogue import make_catalogue  # noqa: E402

console = Console()
Run = Callable[..., Awaitable[FaultResult]]
FAULTS = ("kill9", "rebalance", "pg-restart", "kafka-restart", "redis-restart",
          "redis-flush", "poison", "pg-cut", "zombie", "broker-isolation")
# on a three-broker cluster of their own, behind TCP proxies (tests/chaos/network_cluster.py)
NETWORK: dict[str, Run] = {"zombie": network_scenarios.zombie_worker,
                           "broker-isolation": network_scenarios.isolated_broker}
# on a private three-broker cluster (tests/chaos/cluster_scenarios.py)
CLUSTER_FAULTS = ("leader-kill", "controller-kill", "rolling-restart", "isr-below-min")


def plan(stack: Settings, private: bool, n: int, rate: float
         ) -> dict[str, tuple[Run, dict[str, Any]]]:
    """Each fault's scenario and its arguments, scaled to ``n`` records at ``rate``."""
    publish_s = n / rate
    return {
        "kill9": (scenarios.kill9_storm, {"kills": max(5, round(publish_s / 1.5))}),
        "rebalance": (scenarios.rebalance_storm, {"storm_s": max(12.0, publish_s)}),
        "pg-restart": (scenarios.restart, {"stack": stack, "service": "postgres"}),
        "kafka-restart": (scenarios.restart, {"stack": stack, "service": "kafka"}),
        "redis-restart": (scenarios.restart, {"stack": stack, "service": "redis"}),
        "redis-flush": (scenarios.redis_flush, {"flushall": private}),
        "poison": (scenarios.poison, {"share": 0.01}),
        "pg-cut": (scenarios.pg_cut, {"cuts": 3}),
        # publishing spread so that each fault (tens of seconds) lands while records flow
        "leader-kill": (cluster_scenarios.leader_kill, {"spread_s": 30.0}),
        "controller-kill": (cluster_scenarios.controller_kill, {"spread_s": 30.0}),
        "rolling-restart": (cluster_scenarios.rolling_restart, {"spread_s": 60.0}),
        "isr-below-min": (cluster_scenarios.isr_below_min, {"spread_s": 60.0}),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_env(state: Path) -> dict[str, str]:
    return {"SINKFLEET_STATE_DIR": str(state),
            "SINKFLEET_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "SINKFLEET_KAFKA_CONTROLLER_PORT": str(free_port()),
            "SINKFLEET_PG_PORT": str(free_port()), "SINKFLEET_REDIS_PORT": str(free_port())}


async def run_faults(stack: Settings, faults: list[str], opts: argparse.Namespace,
                     private: bool, workdir: Path, net: NetCluster | None = None,
                     cluster: Settings | None = None) -> list[FaultResult]:
    n = opts.records // len(FAULTS)
    rate = min(opts.rate, n / 10)  # the load lasts >= 10 s: every fault lands mid-run
    steps = plan(stack, private, n, rate)
    results: list[FaultResult] = []
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {f: bar.add_task(f, total=n, start=False, status="waiting") for f in faults}
        for i, fault in enumerate(faults):
            task = tasks[fault]
            bar.start_task(task)
            bar.update(task, status="setting up")
            logdir = workdir / fault
            if fault in NETWORK:
                assert net is not None
                cc = await network_scenarios.open_net_catalogue(
                    logdir, stack, net, max_records=opts.max_records)
                run, kwargs = NETWORK[fault], {"cluster": net}
            elif fault in CLUSTER_FAULTS:
                assert cluster is not None
                cc = await open_cluster_catalogue(logdir, stack, cluster,
                                                  max_records=opts.max_records)
                run, kwargs = steps[fault]
            else:
                cc = await open_chaos_catalogue(logdir, stack, max_records=opts.max_records)
                run, kwargs = steps[fault]
            bar.update(task, status="running")
            try:
                result = await run(cc, logdir, n, rate=rate, seed=opts.seed + i,
                                   progress=lambda k, t=task: bar.advance(t, k), **kwargs)
            finally:
                await drop_chaos_catalogue(cc)
            results.append(result)
            bar.update(task, completed=n, status="[green]ok[/]" if result.ok else
                       "[red]FAILED[/]")
            if not result.ok:
                console.print(result.explain()[-4000:], highlight=False, markup=False)
    return results


async def run_cluster_faults(stack: Settings, faults: list[str], opts: argparse.Namespace,
                             workdir: Path) -> list[FaultResult]:
    """The cluster faults on a private three-broker Kafka (PostgreSQL and Redis: ``stack``'s),
    started for them and stopped after."""
    say = lambda m: console.print(f"[dim]{m}[/]")  # noqa: E731
    cluster = await start_cluster(stack, workdir / "cluster", REPORT_PORTS, say)
    try:
        return await run_faults(stack, faults, opts, False, workdir, cluster=cluster)
    finally:
        stop_cluster(cluster, say)


async def run_hostile(stack: Settings, workdir: Path, good: int) -> HostileResult:
    from sinkfleet.ops.setup.topics import apply_topics
    from sinkfleet.sink.postgres.migrate import migrate
    from tests.support.catalogue import forget

    tc = make_catalogue(workdir, stack, partitions=1, max_records=500, max_age_ms=50)
    await apply_topics(tc.settings, tc.catalogue, say=lambda m: None)
    await migrate(tc.settings, tc.catalogue, lambda m: None)
    try:
        with console.status("hostile inputs: publishing among good records, one worker"):
            return await run_hostile_inputs(tc, workdir / "hostile.log", good=good)
    finally:
        await forget(tc.settings, tables=[tc.table], groups=[tc.group], topics=[tc.topic])


def print_hostile(r: HostileResult) -> None:
    table = Table(title="hostile inputs (one worker, among good records)")
    for col in ("input", "must be", "became", "verdict"):
        table.add_column(col)
    for name, want, got in r.outcomes:
        table.add_row(name, want, got, "ok" if want == got else "FAILED")
    console.print(table)
    exact = "exact" if r.dead_expected == r.dead_actual else "NOT exact"
    console.print(f"inputs tried {r.tried}, good records {r.good:,}; worker alive:"
                  f" {'yes' if r.alive else 'NO'}; lost {r.lost}, duplicated {r.duplicated},"
                  f" changed {len(r.changed)}; dead letters expected {len(r.dead_expected)} /"
                  f" actual {len(r.dead_actual)} ({exact}); {'ok' if r.ok else 'FAILED'}",
                  highlight=False)


def hostile_markdown(r: HostileResult) -> str:
    lines = ["| hostile input | must be | became |", "|---|---|---|"]
    lines += [f"| {name} | {want} | {got} |" for name, want, got in r.outcomes]
    lines.append(f"| **{r.tried} inputs, worker alive: {'yes' if r.alive else 'no'}** |"
                 f" lost {r.lost}, duplicated {r.duplicated}, changed {len(r.changed)} |"
                 f" dead letters {len(r.dead_expected)} expected / {len(r.dead_actual)}"
                 " actual |")
    return "\n".join(lines)


def print_table(results: list[FaultResult]) -> None:
    table = Table(title="chaos report (LONG profile)")
    for col in ("fault", "records", "lost", "duplicated", "DLQ exp/act", "recovery s",
                "verdict"):
        table.add_column(col, justify="left" if col in ("fault", "verdict") else "right")
    for r in results:
        t = r.tally
        table.add_row(r.fault, f"{t.records:,}", str(t.lost), str(t.duplicated),
                      f"{t.dlq_expected}/{t.dlq_actual}",
                      "-" if r.recovery is None else f"{r.recovery:.1f}",
                      "ok" if r.ok else "FAILED")
    console.print(table)
    for r in results:
        console.print(f"[bold]{r.fault}[/]: {'; '.join(r.notes) or '-'}"
                      f" ({r.seconds:.0f} s)", highlight=False)


def markdown(results: list[FaultResult]) -> str:
    lines = ["| fault | records | lost | duplicated | DLQ expected / actual | recovery s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        t = r.tally
        rec = "-" if r.recovery is None else f"{r.recovery:.1f}"
        lines.append(f"| {r.fault} | {t.records:,} | {t.lost} | {t.duplicated} |"
                     f" {t.dlq_expected} / {t.dlq_actual} | {rec} |")
    return "\n".join(lines)


def write_json(path: Path, results: list[FaultResult], opts: argparse.Namespace,
               hostile: HostileResult | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "records": opts.records, "rate": opts.rate,
        "seed": opts.seed, "platform": platform.platform(), "cpus": os.cpu_count(),
        "python": sys.version.split()[0], "loadavg_after": os.getloadavg(),
        "results": [{"fault": r.fault, "ok": r.ok, "recovery_s": r.recovery,
                     "seconds": r.seconds, "codes": r.codes, "notes": r.notes,
                     "problems": r.problems, "tally": {
                         k: v for k, v in vars(r.tally).items()}} for r in results],
        "hostile": None if hostile is None else {
            "ok": hostile.ok, "alive": hostile.alive, "lost": hostile.lost,
            "duplicated": hostile.duplicated, "changed": hostile.changed,
            "outcomes": hostile.outcomes}}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--records", type=int, default=200_000,
                   help="records in all, split evenly over the faults (default 200000)")
    p.add_argument("--rate", type=float, default=2500.0,
                   help="records/s published during each fault (default 2500; lower when"
                        " a fault's share would take under 10 s)")
    p.add_argument("--max-records", type=int, default=500, help="worker batch size")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", action="append", choices=FAULTS + CLUSTER_FAULTS,
                   help="run only these faults")
    p.add_argument("--env-stack", action="store_true",
                   help="use the stack of the environment (it is restarted and flushed!)")
    p.add_argument("--no-hostile", action="store_true", help="skip the hostile inputs")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/chaos_report.json")
    a = p.parse_args(argv)
    if a.records < len(FAULTS) * 1000:
        p.error(f"--records must be at least {len(FAULTS) * 1000}")
    return a


async def main_async(opts: argparse.Namespace, workdir: Path
                     ) -> tuple[list[FaultResult], HostileResult | None]:
    faults = [f for f in FAULTS + CLUSTER_FAULTS if not opts.only or f in opts.only]
    if not opts.env_stack:
        os.environ.update(private_env(workdir / "stack"))
    os.environ.setdefault("SINKFLEET_HOME", str(ROOT))
    stack = load_settings()
    console.print(f"stack: Kafka {stack.kafka_bootstrap}, PostgreSQL :{stack.pg_port},"
                  f" Redis :{stack.redis_port} (state {stack.state})", highlight=False)
    network = [f for f in faults if f in NETWORK]
    net = None
    try:
        await manager.up(stack, None, lambda m: console.print(f"[dim]{m}[/]"))
        stack = load_settings()  # `up` may have generated the secrets
        if network:
            console.print("[dim]starting a 3-broker cluster behind TCP proxies (26xxx)[/]")
            net = await asyncio.to_thread(start_net_cluster, workdir / "net-cluster",
                                          lambda m: None)
        results = await run_faults(stack, [f for f in faults if f not in CLUSTER_FAULTS],
                                   opts, not opts.env_stack, workdir, net)
        if set(faults) & set(CLUSTER_FAULTS):
            results += await run_cluster_faults(stack, [f for f in faults
                                                        if f in CLUSTER_FAULTS], opts, workdir)
        hostile = None
        if not opts.no_hostile:
            hostile = await run_hostile(stack, workdir, max(2000, opts.records // 100))
        return results, hostile
    finally:
        if network:
            stop_net_cluster(net, workdir / "net-cluster", lambda m: None)
        if not opts.env_stack:  # all of it is ours
            manager.down(stack, None, lambda m: console.print(f"[dim]{m}[/]"))


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    # The publisher's client complains while the broker is down (the Kafka restart):
    # expected, and it would tear the progress display.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    load = os.getloadavg()[0]
    if load > 1.0:
        console.print(f"[yellow]note:[/] load average {load:.2f} before the run;"
                      " recovery times may be noisy")
    with tempfile.TemporaryDirectory(prefix="sinkfleet-chaos-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # PostgreSQL's own user must reach its data directory
        for fault in FAULTS + CLUSTER_FAULTS:
            (workdir / fault).mkdir()
        results, hostile = asyncio.run(main_async(opts, workdir))
    print_table(results)
    console.print(markdown(results), highlight=False, markup=False)
    if hostile is not None:
        print_hostile(hostile)
        console.print(hostile_markdown(hostile), highlight=False, markup=False)
    write_json(opts.json, results, opts, hostile)
    raise SystemExit(0 if all(r.ok for r in results) and (hostile is None or hostile.ok)
                     else 1)


if __name__ == "__main__":
    main()
