"""`sinkfleet query` prints stored values verbatim: a value that looks like terminal
markup (``[bold red]x[/]``), an unbalanced close tag (``[/]``, a MarkupError if parsed),
the same after a backslash (``\\[/]``, which a bare ``[`` → ``\\[`` replacement turns into
an escaped backslash plus a live tag) and markup inside a JSON column are shown as
written, not interpreted — through the real CLI, rows stored in the real PostgreSQL."""

from __future__ import annotations

import json

import pytest

from tests.support.cache import CacheCatalogue, cache_catalogue, store
from tests.support.cli import query
from tests.support.records import audit, now_us

pytestmark = pytest.mark.integration
__all__ = ["cache_catalogue"]  # the fixture, used here as in tests/read

HOSTILE = ["[bold red]x[/]", "[/]", "\\[/]", "a\\", "[link=file:///etc/passwd]y[/link]"]


async def test_query_shows_hostile_values_verbatim(cache_catalogue: CacheCatalogue) -> None:
    cc = cache_catalogue
    base = now_us() - 60_000_000
    entries = [audit("tenant-h", "agent-0", action, base + i * 1000)
               for i, action in enumerate(HOSTILE)]
    entries[0]["after"] = json.dumps({"status": "[/]", "note": "[bold]n[/bold]"})
    await store(cc, "audit_entries", entries)
    sink = cc.names["audit_entries"]

    out = query(cc, "audit", "--sink", sink, "--tenant", "tenant-h", "--columns",
                "action,after")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "MarkupError" not in out.stderr
    for action in HOSTILE:
        assert f"│ {action} " in out.stdout, (action, out.stdout)
    assert '│ {"note": "[bold]n[/bold]", "status": "[/]"} │' in out.stdout  # jsonb's key order

    # One row: the column-per-line table.
    one = query(cc, "audit", "--sink", sink, "--tenant", "tenant-h", "--limit", "1")
    assert one.returncode == 0, one.stderr
    assert "│ [bold red]x[/] " in one.stdout and '"status": "[/]"' in one.stdout

    # The title quotes the operator's --tenant: shown as typed, too (here: no rows).
    none = query(cc, "audit", "--sink", sink, "--tenant", "[/]")
    assert none.returncode == 0, none.stderr
    assert none.stderr == f"{sink} audit trail of [/]: no rows\n"
