"""maven_fetch: the one Maven fetch behind the stack's Kafka jars and the benchmark's
Kafka Connect jars (a fake ``mvn`` on PATH; the real one is run by the stack fixture
and tests/benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinkfleet.dev.stack.services import maven_fetch
from sinkfleet.errors import StackError

FAKE_MVN = """#!/bin/sh
echo "$@" > "{log}"
echo "[INFO] Scanning for projects..."
echo "Downloading from central: https://repo1.maven.org/maven2/a/b/1/b-1.jar"
echo "Downloaded from central: https://repo1.maven.org/maven2/a/b/1/b-1.jar (10 kB at 1 MB/s)"
{tail}
"""


def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tail: str = "exit 0") -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "mvn-args"
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN.format(log=log, tail=tail))
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_fetch_runs_maven_once_and_reports_each_download(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = fake_mvn(tmp_path, monkeypatch)
    dest, said = tmp_path / "libs", []
    assert maven_fetch(dest, ["-f", "pom.xml", "dependency:copy"], "test jars",
                       said.append) == dest
    assert log.read_text().split() == ["-B", "-f", "pom.xml", "dependency:copy"]
    assert said == [f"test jars: resolving from Maven Central into {dest} (once; cached there)",
                    "  https://repo1.maven.org/maven2/a/b/1/b-1.jar (10 kB at 1 MB/s)"]
    assert (dest / ".complete").is_file()
    log.unlink()
    said.clear()
    assert maven_fetch(dest, ["-f", "pom.xml"], "test jars", said.append) == dest
    assert not log.exists() and said == []  # cached: Maven not run again


def test_quiet_fetch_passes_q(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = fake_mvn(tmp_path, monkeypatch)
    maven_fetch(tmp_path / "libs", ["dependency:copy"], "test jars")
    assert log.read_text().split() == ["-q", "-B", "dependency:copy"]


def test_failed_fetch_says_why_and_is_redone(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mvn(tmp_path, monkeypatch, 'echo "[ERROR] Could not resolve x:y:1"; exit 1')
    dest = tmp_path / "libs"
    with pytest.raises(StackError) as err:
        maven_fetch(dest, ["dependency:copy"], "test jars", lambda _: None)
    assert str(err.value) == ("resolving test jars from Maven Central failed (exit 1):"
                              " [ERROR] Could not resolve x:y:1")
    assert not (dest / ".complete").exists()


def test_missing_maven_is_a_clear_error(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError) as err:
        maven_fetch(tmp_path / "libs", [], "test jars")
    assert str(err.value) == ("Maven (mvn) not found: install it (apt-get install maven);"
                              " it fetches the test jars from Maven Central")


@pytest.mark.integration
def test_kafka_jars_resolve_into_a_fresh_state_dir(stack: object, tmp_path: Path) -> None:
    """The stack's own fetch, through maven_fetch, from an empty state directory."""
    from sinkfleet.config import load_settings
    from sinkfleet.dev.stack.services import Kafka

    settings = load_settings(home=Path(__file__).resolve().parents[2], state_dir=tmp_path)
    libs = Kafka("kafka", settings)._libs()
    assert libs.parent == tmp_path / "kafka" and (libs / ".complete").is_file()
    assert len(list(libs.glob("kafka_2.13-*.jar"))) == 1
