"""A damaged cluster record or a malformed bootstrap list: a clear error naming the file or
the entry and what to do, never a traceback or a silently wrong cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sinkfleet.config import load_settings
from sinkfleet.dev.stack.cluster import plan_nodes, read_record
from sinkfleet.errors import ConfigError, StackError


@pytest.mark.parametrize("text", ["", "{", "[]", '{"nodes": 3}', "\x00\xff"])
def test_an_unreadable_record_stops_settings_with_the_fix(tmp_path: Path, text: str) -> None:
    record = tmp_path / "state" / "kafka" / "cluster.json"
    record.parent.mkdir(parents=True)
    record.write_text(text, errors="surrogateescape")
    with pytest.raises(ConfigError, match=r"cluster\.json is damaged: stop the stack, remove"):
        load_settings(home=tmp_path, state_dir=tmp_path / "state")


@pytest.mark.parametrize("node", [{"id": 1}, {"id": "x", "host": "h", "port": 1,
                                              "controller_port": 2}, "node"])
def test_a_record_with_bad_nodes_is_refused(tmp_path: Path, node: object) -> None:
    record = tmp_path / "kafka" / "cluster.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"cluster_id": "c", "nodes": [node]}))
    with pytest.raises(StackError, match="is damaged"):
        read_record(tmp_path)


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:x", "127.0.0.1:1,nohost"])
def test_a_malformed_bootstrap_entry_is_named(tmp_path: Path, bootstrap: str) -> None:
    settings = load_settings(home=tmp_path, state_dir=tmp_path / "s", kafka_bootstrap=bootstrap)
    with pytest.raises(StackError, match="is not host:port"):
        plan_nodes(settings, 3)
