"""Terminal rendering of a lag snapshot (rich)."""

from __future__ import annotations

from rich.table import Table

from sinkfleet.ops.lag.collect import Snapshot

COLOURS = {"OK": "green", "WARN": "yellow", "REWIND": "cyan", "STALL": "red", "ERROR": "red"}


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def lag_table(snap: Snapshot, *, partitions: bool = True) -> Table:
    table = Table("group", "topic", "partition", "committed", "log end", "lag (records)",
                  "expired", "lag (seconds)", "members", "status",
                  title=f"consumer lag · collected in {snap.seconds * 1000:.0f} ms")
    for g in snap.groups:
        colour = COLOURS.get(g.status, "white")
        table.add_row(f"[bold]{g.group}[/]", "", "", "", "", _int(g.lag_records),
                      _int(g.expired_records), _secs(g.lag_seconds), str(g.members),
                      f"[{colour}]{g.status}[/]")
        if not partitions:
            continue
        for p in g.partitions:
            s = p.sample
            colour = COLOURS.get(p.status, "white")
            table.add_row("", p.topic, str(p.partition), _int(s.committed), _int(s.log_end),
                          _int(s.lag_records), _int(s.expired_records), _secs(s.lag_seconds),
                          "",
                          f"[{colour}]{p.status}[/]")
    for topic, count in sorted(snap.dlq_records.items()):
        if count:
            table.add_row("[magenta]dead letters[/]", topic, "", "", "", _int(count), "", "", "",
                          "")
    return table
