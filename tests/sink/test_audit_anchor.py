"""Anchored audit chains on the real PostgreSQL: what the table owner can do to a chain
(rewrite and recompute it, cut its tail, delete a tenant) verifies without a checkpoint
and is reported against a signed one; tampered or deleted checkpoint files are reported."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sinkfleet.avro.hashing import chain_hash, content_hash
from sinkfleet.config import Settings, load_settings
from sinkfleet.ops.audit.checkpoint import CheckpointError, Head, load_anchor, write_checkpoint
from sinkfleet.ops.audit.verify import BrokenLink, checkpoint, verify
from sinkfleet.ops.signing import matching_keys, verify_key
from tests.support.audit_family import SCHEMA, SINK, TOPIC, entry, publish, superuser
from tests.support.family import Family, drain, drop_family, make_family, rows, running_worker
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.integration
TENANTS = ("acme", "globex", "initech")
N = 10  # entries per tenant


@pytest_asyncio.fixture
async def fam(stack: Settings, tmp_path: Path) -> AsyncIterator[Family]:
    family = await make_family(tmp_path, stack, SCHEMA, TOPIC, SINK, max_records=50)
    await publish(family, [entry(t, n) for n in range(N) for t in TENANTS])
    async with running_worker(family) as worker:
        await drain(family, worker)
    yield family
    await drop_family(family)


def write_key(path: Path) -> Path:
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return path


@pytest.fixture
def anchored(fam: Family, tmp_path: Path) -> Settings:
    """The family's settings with a signing key and a checkpoint directory of its own."""
    return load_settings(home=fam.root, state_dir=fam.settings.state,
                         audit_signing_key_file=write_key(tmp_path / "signing.pem"),
                         audit_checkpoint_dir=tmp_path / "checkpoints")


def bare(fam: Family, tmp_path: Path) -> Settings:
    """The same database, without any checkpoint: what `audit verify` saw before."""
    return load_settings(home=fam.root, state_dir=fam.settings.state,
                         audit_checkpoint_dir=tmp_path / "no-checkpoints")


async def head(fam: Family, tenant: str) -> str:
    [row] = await rows(fam, f'SELECT chain_hash FROM "{fam.table}" WHERE tenant_id = $1'
                            " ORDER BY chain_seq DESC LIMIT 1", tenant)
    return bytes(row["chain_hash"]).hex()


def found(result: object) -> list[tuple[str, int, str, str, str, str]]:
    broken: list[BrokenLink] = result.broken  # type: ignore[attr-defined]
    return [(b.tenant, b.sequence, b.what, b.expected, b.found, b.entry_id) for b in broken]


async def test_a_rewritten_and_recomputed_chain_is_reported_only_when_anchored(
        fam: Family, anchored: Settings, tmp_path: Path) -> None:
    done = await checkpoint(anchored, fam.catalogue)
    assert done.checkpoint.seq == 1 and len(done.checkpoint.heads) == 3 and done.carried == []
    signed = await head(fam, "acme")
    # The owner edits acme's 5th entry, gives it a matching content hash and recomputes
    # every later link: each row verifies on its own and the chain is whole.
    schema = fam.catalogue.schemas[fam.family]
    chain = await rows(fam, f'SELECT * FROM "{fam.table}" WHERE tenant_id = \'acme\''
                            " ORDER BY chain_seq")
    prev, statements = bytes(chain[3]["chain_hash"]), []
    for n in range(4, N):
        record = {**entry("acme", n), "actor": "mallory" if n == 4 else entry("acme", n)[
            "actor"]}
        content = content_hash(record, schema, "content_hash")
        link = chain_hash(prev, content)
        statements.append(
            f'UPDATE "{fam.table}" SET actor = \'{record["actor"]}\','
            f" content_hash = '\\x{content.hex()}', prev_hash = '\\x{prev.hex()}',"
            f" chain_hash = '\\x{link.hex()}' WHERE tenant_id = 'acme' AND chain_seq = {n + 1}")
        prev = link
    await superuser(fam, *statements)

    unanchored = await verify(bare(fam, tmp_path), fam.catalogue)
    assert unanchored.ok and not unanchored.anchored and unanchored.entries == 3 * N

    result = await verify(anchored, fam.catalogue)
    assert result.anchored and result.anchor is not None and result.anchor.problems == []
    assert found(result) == [("acme", N, "checkpoint_hash", signed, prev.hex(), "acme-0009")]
    assert not result.ok

    # The next checkpoint keeps the head it signed for the rewritten chain.
    again = await checkpoint(anchored, fam.catalogue)
    assert again.checkpoint.seq == 2 and [(h.tenant, h.chain_hash) for h in again.carried] == [
        ("acme", signed)]
    assert found(await verify(anchored, fam.catalogue)) == found(result)


async def test_b_a_deleted_tail_is_reported(fam: Family, anchored: Settings,
                                            tmp_path: Path) -> None:
    await checkpoint(anchored, fam.catalogue)
    await superuser(fam, f'DELETE FROM "{fam.table}" WHERE tenant_id = \'globex\''
                         " AND chain_seq > 7")
    assert (await verify(bare(fam, tmp_path), fam.catalogue)).ok
    result = await verify(anchored, fam.catalogue)
    assert found(result) == [("globex", N, "truncated", f"chain_seq {N}",
                              "chain ends at chain_seq 7", "")]


async def test_c_a_deleted_tenant_is_reported(fam: Family, anchored: Settings,
                                             tmp_path: Path) -> None:
    await checkpoint(anchored, fam.catalogue)
    signed = await head(fam, "initech")
    await superuser(fam, f'DELETE FROM "{fam.table}" WHERE tenant_id = \'initech\'')
    unanchored = await verify(bare(fam, tmp_path), fam.catalogue)
    assert unanchored.ok and unanchored.tenants == 2
    result = await verify(anchored, fam.catalogue)
    assert found(result) == [("initech", N, "tenant_missing", signed, "no entries", "")]
    # --tenant narrows the checkpoint too
    assert (await verify(anchored, fam.catalogue, tenant="acme")).ok


def cli(fam: Family, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SINKFLEET_HOME": str(fam.root),
           "SINKFLEET_STATE_DIR": str(settings.state), "COLUMNS": "250",
           "SINKFLEET_AUDIT_SIGNING_KEY_FILE": str(settings.audit_signing_key_file),
           "SINKFLEET_AUDIT_CHECKPOINT_DIR": str(settings.audit_checkpoints)}
    return subprocess.run([sys.executable, "-m", "sinkfleet", "audit", *args], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_d_a_tampered_checkpoint_fails_its_signature(fam: Family,
                                                           anchored: Settings) -> None:
    made = await asyncio.to_thread(cli, fam, anchored, "checkpoint")
    assert made.returncode == 0, made.stderr + made.stdout
    assert "checkpoint #1 written" in made.stdout
    await checkpoint(anchored, fam.catalogue)
    # The owner cuts globex's tail and lowers its head in the newest checkpoint to match.
    await superuser(fam, f'DELETE FROM "{fam.table}" WHERE tenant_id = \'globex\''
                         " AND chain_seq > 7")
    second = anchored.audit_checkpoints / "checkpoint-00000002.json"
    data = json.loads(second.read_text())
    for h in data["heads"]:
        if h["tenant"] == "globex":
            h["chain_seq"] = 7
            h["chain_hash"] = (await rows(fam, f'SELECT chain_hash FROM "{fam.table}"'
                                               " WHERE tenant_id = 'globex' AND chain_seq = 7"
                                          ))[0]["chain_hash"].hex()
    second.write_text(json.dumps(data))

    result = await verify(anchored, fam.catalogue)
    assert result.anchor is not None and result.anchor.latest is not None
    assert [(Path(p.file).name, p.what) for p in result.anchor.problems] == [
        ("checkpoint-00000002.json", "signature")]
    assert result.anchor.latest.seq == 1  # the latest valid one still holds the tail
    assert [(b.tenant, b.what) for b in result.broken] == [("globex", "truncated")]

    shown = await asyncio.to_thread(cli, fam, anchored, "verify")
    assert shown.returncode == 1, shown.stderr + shown.stdout
    assert "checkpoint problem (signature)" in shown.stdout
    assert "anchored: checkpoint #1" in shown.stdout and "truncated" in shown.stdout
    with pytest.raises(CheckpointError, match="refusing to sign on top"):
        await checkpoint(anchored, fam.catalogue)


async def test_e_deleted_checkpoints_are_named(fam: Family, anchored: Settings) -> None:
    for _ in range(3):
        await checkpoint(anchored, fam.catalogue)
    folder = anchored.audit_checkpoints
    (folder / "checkpoint-00000002.json").unlink()  # from the middle: the links break
    result = await verify(anchored, fam.catalogue)
    assert result.anchor is not None and result.anchor.latest is not None
    assert [(Path(p.file).name, p.what, p.detail) for p in result.anchor.problems] == [
        ("checkpoint-00000003.json", "missing",
         "checkpoint(s) 2..2 are missing before this one: they were deleted")]
    assert result.anchor.latest.seq == 3 and not result.ok and result.broken == []

    (folder / "checkpoint-00000003.json").unlink()  # the newest: verify says what it used,
    await asyncio.sleep(1.2)  # and --max-age finds it too old
    result = await verify(anchored, fam.catalogue)
    assert result.ok and result.anchor is not None and result.anchor.latest is not None
    assert result.anchor.latest.seq == 1
    stale = await verify(anchored, fam.catalogue, max_age=1)
    assert [p.what for p in stale.anchor.problems] == ["stale"]  # type: ignore[union-attr]
    shown = await asyncio.to_thread(cli, fam, anchored, "verify", "--max-age", "1")
    assert shown.returncode == 1 and "anchored: checkpoint #1 of" in shown.stdout, shown.stdout
    assert "more than --max-age 1" in shown.stdout


async def test_without_a_checkpoint_verify_says_chains_are_unanchored(
        fam: Family, anchored: Settings) -> None:
    shown = await asyncio.to_thread(cli, fam, anchored, "verify")
    assert shown.returncode == 0, shown.stderr + shown.stdout
    assert "unanchored" in shown.stdout and "audit ok" in shown.stdout
    as_json = json.loads((await asyncio.to_thread(cli, fam, anchored, "verify", "--json")
                          ).stdout)
    assert (as_json["anchored"], as_json["checkpoint"], as_json["checkpoint_problems"]) == (
        False, None, [])


async def test_checkpoint_every_period_links_each_to_the_last(fam: Family,
                                                              anchored: Settings) -> None:
    env = {**os.environ, "SINKFLEET_HOME": str(fam.root),
           "SINKFLEET_STATE_DIR": str(anchored.state),
           "SINKFLEET_AUDIT_SIGNING_KEY_FILE": str(anchored.audit_signing_key_file),
           "SINKFLEET_AUDIT_CHECKPOINT_DIR": str(anchored.audit_checkpoints)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sinkfleet", "audit", "checkpoint", "--every", "1", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    third = anchored.audit_checkpoints / "checkpoint-00000003.json"
    try:
        async def written() -> bool:
            return third.exists()

        await async_wait_for(written, 60, "three checkpoints")
    finally:
        proc.terminate()
        raw_out, raw_err = await asyncio.wait_for(proc.communicate(), 30)
    out, err = raw_out.decode(), raw_err.decode()
    assert "checkpoint #1 written" in out and "checkpoint #2 written" in out, out + err
    anchor = load_anchor(anchored.audit_checkpoints, verify_key(anchored))
    assert anchor.problems == [] and anchor.latest is not None and anchor.latest.seq >= 3
    assert (await verify(anchored, fam.catalogue)).ok


async def test_a_checkpoint_of_another_database_is_not_compared(
        fam: Family, anchored: Settings) -> None:
    signer = matching_keys(anchored, create=False)
    folder = anchored.audit_checkpoints
    write_checkpoint(folder, signer, load_anchor(folder, signer.public), "elsewhere",
                     "2026-12-05T10:00:00+00:00", [Head(fam.table, "acme", 99, "00" * 32)])
    result = await verify(anchored, fam.catalogue)
    assert result.broken == [] and result.anchor is not None
    assert [(p.what, p.detail) for p in result.anchor.problems] == [
        ("database", f"the checkpoint is of database 'elsewhere', not"
                     f" {anchored.pg_database!r}: its heads were not compared; give each"
                     " database its own"
                     " SINKFLEET_AUDIT_CHECKPOINT_DIR")]
    with pytest.raises(CheckpointError, match="holds checkpoints of database 'elsewhere'"):
        await checkpoint(anchored, fam.catalogue)
