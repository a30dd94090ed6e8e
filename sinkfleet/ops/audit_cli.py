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
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout")] = False,
) -> None:
    """Walk every chain; report the first broken link per tenant (exit 1 if any)."""
    from rich.table import Table

    from sinkfleet.cli import console, friendly, run, settings_and_catalogue
    from sinkfleet.ops.audit import verify

    @friendly
    def go() -> None:
        settings, catalogue = settings_and_catalogue()
        result = run(verify(settings, catalogue, sink=sink, tenant=tenant))
        if as_json:
            print(json.dumps(result.as_dict(), indent=2))
        elif result.ok:
            console.print(f"[green]audit ok[/]: {result.entries} entries in {result.tenants}"
                          f" chain(s) of {', '.join(result.sinks)} verify")
        else:
            table = Table("sink", "tenant", "sequence", "entry", "broken", "expected", "found",
                          title=f"{len(result.broken)} broken chain(s) of {result.tenants}")
            for b in result.broken:
                table.add_row(b.sink, b.tenant, str(b.sequence), b.entry_id, b.what,
                              b.expected, b.found)
            console.print(table)
        if not result.ok:
            raise typer.Exit(1)

    go()
