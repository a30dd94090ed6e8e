"""The Kubernetes manifests of deploy/k8s as documents, and the Deployments kustomize makes
of them (the worker groups are one Deployment patched per group)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "deploy" / "k8s"


def manifest_docs() -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document under deploy/k8s with the file it is in."""
    out = []
    for path in sorted(K8S.rglob("*.y*ml")):
        out += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return out


def patched(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """``doc`` with kustomize's JSON-patch ``replace`` operations applied."""
    out = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "replace", op
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
        node: Any = out
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        else:
            assert last in node, op["path"]
            node[last] = op["value"]
    return out


def group_deployments() -> list[tuple[Path, dict[str, Any]]]:
    """The Deployments deploy/k8s/groups/* make by patching the worker Deployment."""
    (base,) = [d for p, d in manifest_docs() if p.parent.name == "worker"
               and d.get("kind") == "Deployment"]
    out = []
    for kust in sorted((K8S / "groups").glob("*/kustomization.yaml")):
        ops = [op for p in yaml.safe_load(kust.read_text()).get("patches", [])
               for op in yaml.safe_load(p["patch"])]
        out.append((kust, patched(base, ops)))
    return out
