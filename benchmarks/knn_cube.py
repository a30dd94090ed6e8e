"""k-NN and region queries over vectors with PostgreSQL's cube extension: the GiST index
that `using: cube` makes (docs/column-types.md) against a sequential scan.

N random vectors (default 100,000 of 32 dimensions, uniform in [0, 1), or with
--clusters C near C centres, as embeddings are; fixed seed) go
into a scratch table as float8[] with the GiST index on cube(vector), as a sink's
migration builds it. Q query vectors (default 100) are then run both ways (the index,
then `enable_indexscan`/`enable_bitmapscan` off, forcing a sequential scan and a sort).
The queries are the Reader's k-nearest (`ORDER BY cube(v) <-> cube($1) LIMIT k`, k = 10)
and a region (`cube(v) <@ cube(lo, hi)`, a box around the query). Results must agree.
The output is ms per query each way and the ratio. The table is dropped afterwards.

Usage::

    .venv/bin/python benchmarks/knn_cube.py [--rows 100000] [--dim 32] [--queries 100]
        [--k 10] [--clusters C [--spread 0.1]] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sinkfleet.config import load_settings  # noqa: E402
from sinkfleet.sink.postgres.connect import connect  # noqa: E402

KNN = "SELECT id FROM {t} ORDER BY cube(v) <-> cube($1::float8[]) LIMIT $2"
REGION = "SELECT id FROM {t} WHERE cube(v) <@ cube($1::float8[], $2::float8[]) ORDER BY id"


async def _timed(conn: Any, sql: str, args_list: list[tuple[Any, ...]]
                 ) -> tuple[float, list[list[int]]]:
    results = []
    started = time.perf_counter()
    for args in args_list:
        results.append([r["id"] for r in await conn.fetch(sql, *args)])
    return (time.perf_counter() - started) * 1000 / len(args_list), results


async def main(opts: argparse.Namespace) -> dict[str, Any]:
    conn = await connect(load_settings())
    table = f"bench_knn_{uuid.uuid4().hex[:8]}"
    t = f'public."{table}"'
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS cube")
        await conn.execute(f"CREATE TABLE {t} (id integer PRIMARY KEY, v float8[] NOT NULL)")
        started = time.perf_counter()
        await conn.execute("SELECT setseed(0.42)")
        rng = random.Random(7)
        centers = [[rng.random() for _ in range(opts.dim)] for _ in range(opts.clusters)]
        if opts.clusters:  # embeddings cluster: points near one of C centres
            await conn.execute(
                f"INSERT INTO {t} SELECT i, ARRAY(SELECT c[1 + (i % $3) * $2 + j - 1]"
                " + (random() - 0.5) * $4 FROM generate_series(1, $2) AS j)"
                " FROM generate_series(1, $1) AS i, (SELECT $5::float8[] AS c) cs",
                opts.rows, opts.dim, opts.clusters, opts.spread,
                [x for c in centers for x in c])
        else:
            await conn.execute(
                f"INSERT INTO {t} SELECT i, ARRAY(SELECT random() FROM generate_series(1,"
                " $2) WHERE i > 0) FROM generate_series(1, $1) AS i", opts.rows, opts.dim)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute(f'CREATE INDEX "{table}_cube" ON {t} USING gist (cube(v))')
        index_s = time.perf_counter() - started
        await conn.execute(f"ANALYZE {t}")
        size = await conn.fetchval("SELECT pg_relation_size($1)", f"{table}_cube")
        if opts.clusters:  # queries from the data's distribution
            queries = [[x + (rng.random() - 0.5) * opts.spread for x in rng.choice(centers)]
                       for _ in range(opts.queries)]
        else:
            queries = [[rng.random() for _ in range(opts.dim)] for _ in range(opts.queries)]
        # a box a quarter wide on the first 4 axes, open on the others: ~0.25^4 of rows
        boxes = [([max(0.0, q[i] - 0.125) if i < 4 else 0.0 for i in range(opts.dim)],
                  [min(1.0, q[i] + 0.125) if i < 4 else 1.0 for i in range(opts.dim)])
                 for q in queries]
        knn_args = [(q, opts.k) for q in queries]
        out: dict[str, Any] = {"rows": opts.rows, "dim": opts.dim, "queries": opts.queries,
                               "clusters": opts.clusters, "spread": opts.spread,
                               "k": opts.k, "load_s": round(load_s, 2),
                               "index_build_s": round(index_s, 2), "index_mb":
                               round(size / 2**20, 1)}
        for name, sql, args in (("knn", KNN, knn_args), ("region", REGION, boxes)):
            query = sql.format(t=t)
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {query}", *args[0]))
            await _timed(conn, query, args[:5])  # warm the cache
            index_ms, by_index = await _timed(conn, query, args)
            async with conn.transaction():
                await conn.execute("SET LOCAL enable_indexscan = off;"
                                   " SET LOCAL enable_bitmapscan = off")
                seq_ms, by_scan = await _timed(conn, query, args)
            if by_index != by_scan:
                raise SystemExit(f"{name}: the index and the scan disagree")
            out[name] = {"index_ms": round(index_ms, 2), "seqscan_ms": round(seq_ms, 2),
                         "speedup": round(seq_ms / index_ms, 1),
                         "uses_index": f"{table}_cube" in plan,
                         "mean_rows": sum(map(len, by_index)) / len(by_index)}
        return out
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {t}")
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=0,
                        help="0: uniform in [0, 1); C: points within --spread of C centres")
    parser.add_argument("--spread", type=float, default=0.1)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    result = asyncio.run(main(opts))
    data = (f"{result['clusters']} clusters (±{result['spread'] / 2})" if result["clusters"]
            else "uniform")
    for name in ("knn", "region"):
        r = result[name]
        print(f"{name:6} {result['rows']:,} x {result['dim']}-D, {data}:"
              f" index {r['index_ms']} ms/query,"
              f" seq scan {r['seqscan_ms']} ms/query -> {r['speedup']}x (index used:"
              f" {r['uses_index']}, {r['mean_rows']:.1f} rows/query)")
    print(f"load {result['load_s']} s, index build {result['index_build_s']} s,"
          f" index {result['index_mb']} MB")
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2) + "\n")
