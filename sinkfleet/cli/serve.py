"""`sinkfleet serve` (the HTTP read service) and `sinkfleet serve token create|revoke|list`.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Annotated, Any

import typer

from sinkfleet.cli.base import console, err, friendly, run, say, settings_and_catalogue

serve_app = typer.Typer(help="The HTTP read service: JSON reads of the sinks per tenant"
                        " (docs/http-read-service.md).")
token_app = typer.Typer(help="API tokens of the read service: one tenant each, hashed at"
                        " rest.", no_args_is_help=True)
serve_app.add_typer(token_app, name="token")


@serve_app.callback(invoke_without_command=True)
@friendly
def serve(ctx: typer.Context,
          host: Annotated[str, typer.Option(envvar="SINKFLEET_SERVE_HOST",
                                            help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(envvar="SINKFLEET_SERVE_PORT", min=0,
                                            max=65535, help="port (0: any free)")] = 8480,
          max_requests: Annotated[int, typer.Option(
              min=1, help="requests answered at once; more get 503")] = 64,
          max_streams: Annotated[int, typer.Option(min=0, help="open event streams")] = 100,
          max_connections: Annotated[int, typer.Option(
              min=1, max=10_000, help="open connections; more get 503")] = 256,
          deadline: Annotated[float, typer.Option(
              min=0.1, help="seconds to answer a request, else 503")] = 10.0,
          pool_size: Annotated[int, typer.Option(
              min=1, max=200, help="PostgreSQL connections")] = 8,
          stream_settle: Annotated[float, typer.Option(
              min=0, max=300, help="seconds a stream holds rows back on a time order, so"
              " rows stored out of time order still come (longer than a worker batch's"
              " age)")] = 2.0) -> None:
    """Serve /v1/sinks/…, /openapi.json, /metrics and /healthz until stopped (SIGTERM).

    E.g. sinkfleet serve --port 8480, then
    curl -H "Authorization: Bearer $TOKEN" localhost:8480/v1/sinks/policies/rows"""
    if ctx.invoked_subcommand is not None:
        return
    from sinkfleet.read.serve.app import ReadService, ServeOptions
    from sinkfleet.read.serve.stream import StreamOptions

    settings, catalogue = settings_and_catalogue()
    options = ServeOptions.from_settings(settings, max_connections=max_connections,
                                         max_requests=max_requests, max_streams=max_streams,
                                         deadline=deadline, pool_size=pool_size,
                                         stream=StreamOptions(settle=stream_settle))

    async def main() -> None:
        service = ReadService(settings, catalogue, options)
        bound = await service.start(host, port)
        err.print(f"serving sinks on http://{host}:{bound} (GET /openapi.json)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await service.close()

    run(main())


@token_app.command("create")
@friendly
def token_create(tenant: Annotated[str, typer.Option("--tenant", help="the tenant it reads as")],
                 note: Annotated[str | None, typer.Option(help="who or what holds it")] = None
                 ) -> None:
    """Make a token; it is printed once (stdout), only its SHA-256 is stored."""
    from sinkfleet.read.serve.tokens import create_token
    from sinkfleet.sink.postgres.connect import pg

    settings, _ = settings_and_catalogue()

    async def main() -> tuple[str, str]:
        async with pg(settings) as conn:
            return await create_token(conn, tenant, note)

    token, token_id = run(main())
    print(token)
    err.print(f"token {token_id} for tenant {tenant!r}: shown once, keep it secret"
              f" (revoke: sinkfleet serve token revoke {token_id})", highlight=False)


@token_app.command("revoke")
@friendly
def token_revoke(token: Annotated[str, typer.Argument(help="the token or its id")]) -> None:
    """Revoke a token: the service refuses it within seconds (its cache's TTL)."""
    from sinkfleet.errors import ConfigError
    from sinkfleet.read.serve.tokens import revoke_token
    from sinkfleet.sink.postgres.connect import pg

    settings, _ = settings_and_catalogue()

    async def main() -> bool:
        async with pg(settings) as conn:
            return await revoke_token(conn, token)

    if not run(main()):
        raise ConfigError("no live token matches; `sinkfleet serve token list` shows them")
    say("revoked")


@token_app.command("list")
@friendly
def token_list(as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout")] = False
               ) -> None:
    """Tokens: id, tenant, note, created, revoked (never the tokens themselves)."""
    from rich.table import Table
    from rich.text import Text

    from sinkfleet.read.serve.tokens import list_tokens
    from sinkfleet.sink.postgres.connect import pg

    settings, _ = settings_and_catalogue()

    async def main() -> list[dict[str, Any]]:
        async with pg(settings) as conn:
            return await list_tokens(conn)

    rows = run(main())
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table("id", "tenant", "note", "created", "revoked")
    for r in rows:
        table.add_row(*(Text("" if r[k] is None else str(r[k]))
                        for k in ("token_id", "tenant", "note", "created_at", "revoked_at")))
    console.print(table)
