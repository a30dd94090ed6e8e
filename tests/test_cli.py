"""The CLI: user mistakes give one clear line and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.evolution import NOTE, Evo, forget, new_evo

ROOT = Path(__file__).resolve().parent.parent


def sinkfleet(*args: str, home: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SINKFLEET_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sinkfleet", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("args, message", [
    (("worker", "--spec", "nope"), "no worker spec 'nope' in workers/"),
    (("produce", "--family", "nope", "--count", "1"), "no topic carries family 'nope'"),
    (("stack", "up", "--only", "zookeeper"), "unknown service"),
    (("worker", "--spec", "events", "--instance-id", "slot 1"),
     "--instance-id 'slot 1' is not a Kafka group instance id"),
    (("rollups", "--instance-id", "a/b"), "--instance-id 'a/b' is not a Kafka group instance id"),
])
def test_user_mistakes_are_one_clear_line(args: tuple[str, ...], message: str) -> None:
    out = sinkfleet(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_missing_catalogue_says_what_to_do(tmp_path: Path) -> None:
    out = sinkfleet("catalogue", "check", home=tmp_path)
    assert out.returncode == 2
    assert "SINKFLEET_HOME" in out.stderr and "Traceback" not in out.stderr


def test_catalogue_check_passes_on_the_project() -> None:
    out = sinkfleet("catalogue", "check")
    assert out.returncode == 0, out.stderr
    # as many as the catalogue's files (families keep being added: issue 15)
    n = {d: len(list((ROOT / d).glob(g))) for d, g in (("schemas", "*.avsc"),
                                                        ("topics", "*.yaml"),
                                                        ("sinks", "*.yaml"))}
    assert n["schemas"] == n["topics"] == n["sinks"] >= 23
    assert (f"catalogue ok: {n['schemas']} schemas, {n['topics']} topics, {n['sinks']} sinks,"
            " 3 workers") in out.stdout


def test_bad_option_value_is_a_usage_error() -> None:
    out = sinkfleet("produce", "--family", "experience_event", "--count", "0")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


# --- schemas ------------------------------------------------------------------------------
def test_schemas_check_against_a_directory_refuses_an_incompatible_change(
        tmp_path: Path) -> None:
    import json

    from sinkfleet.config import load_settings

    evo = Evo(tmp_path, load_settings(home=tmp_path), "cli0000001")
    _, cat = evo.version(evo.schema({"name": "foo", "type": "string"}))
    previous = tmp_path / "previous" / evo.family
    previous.mkdir(parents=True)
    (previous / "1.avsc").write_text(json.dumps(evo.schema()))
    out = sinkfleet("schemas", "check", "--against", str(previous.parent), home=cat.root)
    assert out.returncode == 2, out.stdout + out.stderr
    assert (f"error: {evo.family}: field 'foo' was added without a default: records written"
            " with version 1 cannot be read") in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    (previous / "1.avsc").write_text(json.dumps(evo.schema({"name": "foo", "type": "int"})))
    out = sinkfleet("schemas", "check", "--against", str(previous.parent), home=cat.root)
    assert out.returncode == 2
    assert f"{evo.family}: field 'foo': the new type string cannot read int" in out.stderr
    out = sinkfleet("schemas", "check", "--against", str(tmp_path / "nope"), home=cat.root)
    assert out.returncode == 2 and "not a directory" in out.stderr


@pytest.mark.integration
def test_schemas_register_list_and_migrate_refusal(stack: Any, tmp_path: Path) -> None:
    import asyncio
    import json

    evo = new_evo(tmp_path, stack)
    try:
        _, cat = evo.version(evo.schema())
        out = sinkfleet("db", "migrate", home=cat.root)
        assert out.returncode == 0, out.stderr
        assert f"registered {evo.family} version 1" in out.stdout
        _, cat = evo.version(evo.schema(NOTE))
        out = sinkfleet("schemas", "check", "--family", evo.family, home=cat.root)
        assert out.returncode == 0, out.stderr
        assert f"{evo.family}: compatible with version 1 (BACKWARD)" in out.stdout
        out = sinkfleet("schemas", "register", "--family", evo.family, home=cat.root)
        assert out.returncode == 0 and f"registered {evo.family} version 2" in out.stdout
        out = sinkfleet("schemas", "list", "--family", evo.family, "--json", home=cat.root)
        listed = json.loads(out.stdout)
        assert [(v["family"], v["version"]) for v in listed] == [(evo.family, 1),
                                                                (evo.family, 2)]
        assert all(len(v["fingerprint"]) == 16 and v["registered_at"] for v in listed)
        out = sinkfleet("schemas", "list", home=cat.root)
        assert out.returncode == 0 and evo.family in out.stdout and "fingerprint" in out.stdout
        _, cat = evo.version(evo.schema(NOTE, {"name": "n2", "type": "long"}))
        for args in (("schemas", "register"), ("db", "migrate")):
            out = sinkfleet(*args, home=cat.root)
            assert out.returncode == 2, args
            assert (f"error: {evo.family}: field 'n2' was added without a default: records"
                    " written with version 2 cannot be read") in out.stderr
            assert "Traceback" not in out.stderr + out.stdout
    finally:
        asyncio.run(forget(evo))
