"""ruff, mypy and the import contracts are part of the suite: a lint error fails the tests."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "sinkfleet", "tests",
                          "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "sinkfleet"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_layers_kept() -> None:
    """The contracts in pyproject.toml [tool.importlinter]: one-way layers, CLI helpers a
    leaf, dev tools apart from the runtime, no package cycles (docs/architecture.md)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_layers_catch_a_crossing(tmp_path: Path) -> None:
    """The contracts can fail: a copy of the package where avro/ (a low layer) imports the
    worker and the runtime imports the dev stack is refused, naming both imports."""
    import os
    import shutil

    shutil.copytree(ROOT / "sinkfleet", tmp_path / "sinkfleet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "sinkfleet" / "avro" / "crossing.py").write_text(
        "from sinkfleet.worker import loop\n")
    (tmp_path / "sinkfleet" / "sink" / "crossing.py").write_text(
        "from sinkfleet.dev.stack import services\n")
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint_imports), "--no-cache"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "One-way layers BROKEN" in text
    assert "Dev tools apart from the runtime BROKEN" in text
    assert "sinkfleet.avro.crossing -> sinkfleet.worker.loop" in text
    assert "sinkfleet.sink.crossing -> sinkfleet.dev.stack.services" in text
