"""Tenants kept apart by the database: one view per tenant sink table, maintained by
`sinkfleet db migrate` (docs/reads.md, "Tenants").

A sink with a tenant column (``tenant:`` in its spec, or an audit sink's chain owner)
gets a ``security_barrier`` view ``<table>_tenant`` (and ``<history>_tenant``) showing
only the rows whose tenant equals the transaction's ``sinkfleet.tenant`` setting
(``set_config('sinkfleet.tenant', $1, true)``); with no setting it shows no rows.
``sinkfleet_reader`` may SELECT the views and not the tables, so no SQL a reader
writes — a crafted filter, a cursor, another tenant's id — reaches another tenant.

Why views rather than row-level security on the tables: PostgreSQL refuses ``COPY
FROM`` into a table with row-level security for every role but its owner (and
BYPASSRLS roles), and the workers' least-privilege roles COPY into the sink tables.
The view leaves the tables — and the workers' writes — exactly as they were.
"""

from __future__ import annotations

import asyncpg

from sinkfleet.catalogue import Catalogue, Sink
from sinkfleet.sink.postgres.ddl import derived_name, quote_ident
from sinkfleet.sink.postgres.summary_sql import has_summary, parts_table

TENANT_SETTING = "sinkfleet.tenant"  # set per transaction by Reader(tenant=…)
SET_TENANT_SQL = f"SELECT set_config('{TENANT_SETTING}', $1, true)"


def tenant_view(sink: Sink) -> str:
    """The view of one tenant's rows of ``sink``'s table (qualified, quoted)."""
    spec = sink.spec
    return f"{quote_ident(spec.db_schema)}.{quote_ident(derived_name(spec.table, 'tenant'))}"


def tenant_history_view(sink: Sink) -> str:
    """The view of one tenant's rows of a state sink's history table."""
    spec = sink.spec
    return (f"{quote_ident(spec.db_schema)}."
            f"{quote_ident(derived_name(spec.history_table, 'tenant'))}")


def tenant_parts_view(sink: Sink) -> str:
    """The view of one tenant's summary parts (a tenant sink's summary groups by its
    tenant column: the catalogue requires it)."""
    spec = sink.spec
    return (f"{quote_ident(spec.db_schema)}."
            f"{quote_ident(derived_name(spec.table, 'summary_parts_tenant'))}")


def tenant_relations(sink: Sink) -> list[tuple[str, str]]:
    """(table, view) pairs of a tenant sink; none for a sink without a tenant column."""
    spec = sink.spec
    if spec.tenant_column is None:
        return []
    out = [(spec.qualified_table, tenant_view(sink))]
    if spec.state is not None:
        out.append((f"{quote_ident(spec.db_schema)}.{quote_ident(spec.history_table)}",
                    tenant_history_view(sink)))
    if has_summary(sink):
        out.append((parts_table(sink), tenant_parts_view(sink)))
    return out


def view_sql(sink: Sink, table: str, view: str) -> str:
    column = sink.spec.tenant_column
    assert column is not None
    kind = next(c.pg_type for c in sink.columns if c.name == column)
    # NULLIF: a setting reset at the end of a transaction reads '' (not NULL) afterwards
    return (f"CREATE OR REPLACE VIEW {view} WITH (security_barrier) AS SELECT * FROM {table}"
            f" WHERE {quote_ident(column)} = NULLIF(current_setting('{TENANT_SETTING}',"
            f" true), '')::{kind}")


async def maintain_tenant_views(conn: asyncpg.Connection, catalogue: Catalogue,
                                reader_role: str) -> None:
    """Create or refresh every tenant view (``SELECT *`` is expanded when a view is made,
    so each run picks up new columns); ``reader_role`` reads the views, not the tables."""
    for name in sorted(catalogue.sinks):
        sink = catalogue.sinks[name]
        for table, view in tenant_relations(sink):
            async with conn.transaction():
                try:
                    async with conn.transaction():
                        await conn.execute(view_sql(sink, table, view))
                except asyncpg.InvalidTableDefinitionError:  # a column went or moved
                    await conn.execute(f"DROP VIEW {view}")
                    await conn.execute(view_sql(sink, table, view))
                await conn.execute(f"GRANT SELECT ON {view} TO {reader_role}")
                await conn.execute(f"REVOKE ALL ON {table} FROM {reader_role}")
