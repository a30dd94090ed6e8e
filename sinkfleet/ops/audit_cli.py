"""`sinkfleet audit verify`: the typer sub-app (logic in ops/audit.py).

``sinkfleet.cli`` imports this module to register ``audit_app``, so its helpers
are imported inside the commands, not at the top.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

audit_app = typer.Typer(help="Audit trails: verify the per-tenant hash chains.",
                        no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's chain")] = None,
    sink: Annotated[str | None, typer.Option(help="only this audit sink")] = None,
    limit: Annotated[int, typer.Option(min=0, help="broken links listed (--json lists all)")
                     ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout, every broken link")
                       ] = False,
) -> None:
    """Walk every chain; report every broken link of every tenant (exit 1 if any)."""
    from collections import Counter

    from rich.table import Table

    from sinkfleet.cli import console, friendly, run, settings_and_catalogue
    from sinkfleet.ops.audit import verify

    @friendly
    def go() -> None:
        settings, catalogue = settings_and_catalogue()
        result = run(verify(settings, catalogue, sink=sink, tenant=tenant))
        legacy = (f" ({result.legacy} hashed with the legacy v1 encoding)"
                  if result.legacy else "")
        if as_json:
            print(json.dumps(result.as_dict(), indent=2))
        elif result.ok:
            console.print(f"[green]audit ok[/]: {result.entries} entries in {result.tenants}"
                          f" chain(s) of {', '.join(result.sinks)} verify{legacy}")
        else:
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
