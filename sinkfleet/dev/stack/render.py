"""`sinkfleet stack status` as tables: services and nodes, the quorum, under-replicated
partitions."""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from sinkfleet.dev.stack.health import ClusterHealth
from sinkfleet.dev.stack.manager import ServiceStatus

URP_ROWS = 20  # beyond this, a count: a dead node makes every partition it held one


def status_table(statuses: list[ServiceStatus]) -> Table:
    table = Table("service", "pid", "port", "healthy", "detail")
    for s in statuses:
        table.add_row(s.name, str(s.pid or "-"), str(s.port),
                      "[green]yes[/]" if s.healthy else "[red]no[/]", s.detail)
    return table


def health_tables(health: ClusterHealth) -> list[RenderableType]:
    out: list[RenderableType] = []
    quorum = health.quorum
    if quorum is None:
        out.append(Text(f"controller quorum: unknown ({health.quorum_error})", style="red"))
    else:
        table = Table("voter", "status", "log end offset", "lag",
                      title=f"controller quorum: leader {quorum.leader}")
        for v in [*quorum.voters, *quorum.observers]:
            table.add_row(str(v.node_id), v.status, str(v.log_end_offset), str(v.lag))
        out.append(table)
    urps = health.under_replicated
    if urps is None:
        out.append(Text(f"under-replicated partitions: unknown ({health.metadata_error})",
                        style="red"))
    elif not urps:
        out.append(Text("under-replicated partitions: 0", style="green"))
    else:
        table = Table("topic", "partition", "leader", "replicas", "in sync",
                      title=f"under-replicated partitions: {len(urps)}")
        for u in urps[:URP_ROWS]:
            table.add_row(u.topic, str(u.partition), str(u.leader) if u.leader >= 0 else
                          "[red]none[/]", ",".join(map(str, u.replicas)),
                          ",".join(map(str, u.isr)))
        if len(urps) > URP_ROWS:
            table.add_row(f"… {len(urps) - URP_ROWS} more", "", "", "", "")
        out.append(table)
    return out
