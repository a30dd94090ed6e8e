"""`sinkfleet audit verify`: the typer sub-app (logic in ops/audit/verify.py).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from sinkfleet.cli.base import console, friendly, run, say, settings_and_catalogue

if TYPE_CHECKING:
    from sinkfleet.ops.audit.verify import Verification

audit_app = typer.Typer(help="Audit trails: verify the per-tenant hash chains and anchor"
                        " them in signed checkpoints kept outside PostgreSQL.",
                        no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's chain")] = None,
    sink: Annotated[str | None, typer.Option(help="only this audit sink")] = None,
    limit: Annotated[int, typer.Option(min=0, help="broken links listed (--json lists all)")
                     ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout, every broken link")
                       ] = False,
    max_age: Annotated[float | None, typer.Option(
        "--max-age", min=1, help="seconds: a latest signed checkpoint older than this is a"
        " failure (checkpoints stopped, or the newest were deleted)")] = None,
) -> None:
    """Walk every chain; report each broken link and each change since the checkpoint.

    Exit 1 if any, or if a checkpoint file is damaged (or stale, with --max-age)."""
    from collections import Counter

    from rich.table import Table

    from sinkfleet.ops.audit.verify import verify

    @friendly
    def go() -> None:
        settings, catalogue = settings_and_catalogue()
        result = run(verify(settings, catalogue, sink=sink, tenant=tenant,
                            max_age=max_age))
        legacy = (f" ({result.legacy} hashed with the legacy v1 encoding)"
                  if result.legacy else "")
        if as_json:
            print(json.dumps(result.as_dict(), indent=2))
        elif not result.broken:
            _print_anchor(result)
            head = ("[green]audit ok[/]" if result.ok else
                    "[red]audit NOT OK[/] (the checkpoint problems above)")
            console.print(f"{head}: {result.entries} entries in {result.tenants}"
                          f" chain(s) of {', '.join(result.sinks)} verify{legacy}")
        else:
            _print_anchor(result)
            console.print(f"[red]audit BROKEN[/]: {len(result.broken)} broken link(s) in"
                          f" {result.broken_tenants} of {result.tenants} chain(s);"
                          f" {result.entries} entries checked{legacy}")
            per_chain = Counter((b.sink, b.tenant) for b in result.broken)
            first: dict[tuple[str, str], int] = {}
            for b in result.broken:  # in chain order
                first.setdefault((b.sink, b.tenant), b.sequence)
            worst = per_chain.most_common(limit)
            summary = Table("sink", "tenant", "broken links", "first at sequence",
                            title=f"{len(worst)} of {len(per_chain)} broken chain(s)")
            for (name, chain), n in worst:
                summary.add_row(name, chain, str(n), str(first[(name, chain)]))
            console.print(summary)
            shown = result.broken[:limit]
            table = Table("sink", "tenant", "sequence", "entry", "broken", "reason",
                          "expected", "found",
                          title=f"first {len(shown)} of {len(result.broken)} broken link(s)")
            for b in shown:
                table.add_row(b.sink, b.tenant, str(b.sequence), b.entry_id, b.what, b.reason,
                              b.expected[:16], b.found[:16])
            console.print(table)
            if len(shown) < len(result.broken):
                console.print(f"{len(result.broken) - len(shown)} more: --limit N, or --json"
                              " for every broken link")
        if not result.ok:
            raise typer.Exit(1)

    go()


def _print_anchor(result: Verification) -> None:
    """Which signed checkpoint the chains were held against, and what is wrong with the
    checkpoint files; or that there is none."""
    anchor = result.anchor
    assert anchor is not None
    for p in anchor.problems:
        console.print(f"[red]checkpoint problem[/] ({p.what}) {p.file}: {p.detail}",
                      highlight=False)
    if anchor.latest is not None:
        cp = anchor.latest
        console.print(f"anchored: checkpoint #{cp.seq} of {cp.created_at} ({cp.path}, key"
                      f" {cp.key_id}, {len(cp.heads)} chain head(s)); entries after it are"
                      " protected by the hash chain only", highlight=False)
    elif not anchor.problems:
        console.print(f"[yellow]unanchored[/]: no signed checkpoint in {anchor.directory}; the"
                      " table owner could rewrite and recompute a chain, or delete its tail or"
                      " a tenant, unseen. Run `sinkfleet audit checkpoint` on a schedule"
                      " (docs/audit-anchoring.md)", highlight=False)


@audit_app.command("checkpoint")
def audit_checkpoint(
    every: Annotated[float | None, typer.Option(
        min=1, help="seconds: keep running, one checkpoint each period (else one, then"
        " exit)")] = None,
) -> None:
    """Verify every chain, then sign each tenant's chain head into the next checkpoint.

    Written to SINKFLEET_AUDIT_CHECKPOINT_DIR, outside PostgreSQL. Exit 1 if a chain is
    broken (its previously signed head is kept)."""
    from sinkfleet.ops.audit.verify import checkpoint

    @friendly
    def once() -> bool:
        settings, catalogue = settings_and_catalogue()
        done = run(checkpoint(settings, catalogue))
        cp, checked = done.checkpoint, done.verification
        say(f"checkpoint #{cp.seq} written: {cp.path} ({len(cp.heads)} chain head(s) of"
            f" {len(checked.sinks)} sink(s), {checked.entries} entries verified, key"
            f" {cp.key_id})")
        if checked.broken:
            say(f"[red]{len(checked.broken)} broken link(s) in {checked.broken_tenants}"
                f" chain(s)[/]: their previously signed heads were kept"
                f" ({len(done.carried)}); see `sinkfleet audit verify`")
        return checked.ok

    if every is None:
        if not once():
            raise typer.Exit(1)
        return
    while True:  # an error is printed and the next period tries again; Ctrl-C stops
        try:
            once()
        except typer.Exit as exc:
            if exc.exit_code != 2:
                raise
        time.sleep(every)
