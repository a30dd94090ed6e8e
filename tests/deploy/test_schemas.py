"""The shipped deployments against the schemas of what runs them, offline: every Kubernetes
manifest against the Kubernetes API (kubernetes-validate's schemas, strict: an unknown
field is an error), the KEDA ScaledObject against KEDA's documented fields, and
docker-compose.yml against the compose spec (the schema check-jsonschema ships). Then
what they must run: roll-ups, the retention scheduler with its archive on a volume,
health-checked workers, and a `cluster` profile that mirrors `stack up --brokers 3`.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from sinkfleet.config import load_settings
from sinkfleet.dev.stack.cluster import plan_nodes
from tests.deploy.manifests import K8S, ROOT, group_deployments, manifest_docs
from tests.support.catalogue import KAFKA_LAYOUT_ENV

K8S_VERSION = "1.37.0"  # the newest Kubernetes kubernetes-validate 1.37.0 ships schemas for
COMPOSE = ROOT / "docker-compose.yml"
KEDA_SCHEMA = Path(__file__).with_name("keda-scaledobject.schema.json")
NOT_API_OBJECTS = {"Kustomization"}  # kustomize's own files, never sent to the API server


def _id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.relative_to(K8S)}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


API_OBJECTS = [(p, d) for p, d in [*manifest_docs(), *group_deployments()]
               if d.get("kind") not in NOT_API_OBJECTS and d.get("kind") != "ScaledObject"]


def k8s_errors(doc: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(map(str, exc.path))}: {exc.message}"
    return None


@pytest.mark.parametrize("item", API_OBJECTS, ids=[_id(i) for i in API_OBJECTS])
def test_manifest_is_valid_for_the_kubernetes_api(item: tuple[Path, dict[str, Any]]) -> None:
    assert k8s_errors(item[1]) is None


def test_every_manifest_is_validated_by_some_schema() -> None:
    kinds = sorted({d["kind"] for _, d in manifest_docs()})
    assert kinds == ["ConfigMap", "Deployment", "Job", "Kustomization",
                     "PersistentVolumeClaim", "ScaledObject", "Secret", "Service"]
    # the worker groups' Deployments as kustomize renders them are checked too
    assert {d["metadata"]["name"] for _, d in group_deployments()} == {
        "sinkfleet-worker-audit", "sinkfleet-worker-state"}


def test_the_kubernetes_schemas_catch_a_misspelt_field() -> None:
    (worker,) = [d for p, d in manifest_docs() if p.name == "deployment.yaml"]
    bad = json.loads(json.dumps(worker))
    bad["spec"]["replica"] = 2  # not `replicas`
    assert "replica" in (k8s_errors(bad) or "")
    bad = json.loads(json.dumps(worker))
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = []
    assert k8s_errors(bad) is not None


def keda_errors(doc: dict[str, Any]) -> list[str]:
    """KEDA's fields (our schema from its docs), and the HPA behaviour inside against
    Kubernetes' own autoscaling/v2 HorizontalPodAutoscalerBehavior."""
    schema = json.loads(KEDA_SCHEMA.read_text())
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    behavior = (doc.get("spec", {}).get("advanced", {})
                .get("horizontalPodAutoscalerConfig", {}).get("behavior"))
    if behavior is not None:
        pkg = resources.files("kubernetes_validate") / "kubernetes-json-schema"
        defs = json.loads((pkg / f"v{K8S_VERSION}-local-strict" / "_definitions.json")
                          .read_text())
        ref = {"$ref": f"{defs['$id']}#/$defs/"
                       "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"}
        registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
        validator = jsonschema.Draft202012Validator(ref, registry=registry)
        errors += [f"behavior.{'.'.join(map(str, e.path))}: {e.message}"
                   for e in validator.iter_errors(behavior)]
    return errors


def scaled_object() -> dict[str, Any]:
    (doc,) = [d for _, d in manifest_docs() if d.get("kind") == "ScaledObject"]
    return doc


def test_scaledobject_uses_only_kedas_documented_fields() -> None:
    assert keda_errors(scaled_object()) == []


def test_the_keda_schema_catches_mistakes() -> None:
    doc = json.loads(json.dumps(scaled_object()))
    doc["spec"]["minReplicas"] = 1  # the HPA's name, not KEDA's minReplicaCount
    doc["spec"]["triggers"][0]["metadata"]["threshold"] = 10000  # KEDA wants a string
    doc["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"][
        "policies"][0]["type"] = 2
    errors = keda_errors(doc)
    assert any("minReplicas" in e for e in errors), errors
    assert any(e.startswith("spec.triggers.0.metadata.threshold") for e in errors), errors
    assert any(e.startswith("behavior.scaleUp.policies.0.type") for e in errors), errors
    # the commented-out Kafka alternative in scaledobject.yaml is valid too
    kafka = json.loads(json.dumps(scaled_object()))
    kafka["spec"]["triggers"] = [{"type": "kafka", "metadata": {
        "bootstrapServers": "kafka:9092", "consumerGroup": "sinkfleet.events",
        "topic": "agent.experience-events", "lagThreshold": "10000",
        "offsetResetPolicy": "earliest", "allowIdleConsumers": "false"}}]
    assert keda_errors(kafka) == []


# --- docker-compose.yml ------------------------------------------------------------------
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved
    return doc


def compose_errors(doc: dict[str, Any]) -> list[str]:
    # the file only: check-jsonschema's own CLI is not needed (nor imported)
    schema_file = distribution("check-jsonschema").locate_file(
        "check_jsonschema/builtin_schemas/vendor/compose-spec.json")
    schema = json.loads(Path(str(schema_file)).read_text())
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in
            jsonschema.Draft7Validator(schema).iter_errors(doc)]


def test_compose_file_follows_the_compose_spec() -> None:
    assert compose_errors(compose()) == []


def test_the_compose_spec_catches_mistakes() -> None:
    doc = compose()
    doc["services"]["worker"]["healthcheck"] = {"test": ["CMD", "true"], "intervall": "5s"}
    doc["services"]["setup"]["depends_on"]["postgres"]["condition"] = "service_ready"
    errors = compose_errors(doc)
    assert any(e.startswith("services.worker.healthcheck") for e in errors), errors
    assert any(e.startswith("services.setup.depends_on") for e in errors), errors


def test_compose_runs_rollups_and_retention_with_the_archive_on_a_volume() -> None:
    services = compose()["services"]
    assert services["rollups"]["command"] == ["rollups"]
    # faust needs a writable working directory; the image's /app is read-only for it
    assert services["rollups"]["environment"]["SINKFLEET_STATE_DIR"] == "/var/lib/sinkfleet"
    retention = services["retention"]
    assert retention["command"][:3] == ["retention", "run", "--every"]
    archive = retention["environment"]["SINKFLEET_ARCHIVE_DIR"]
    assert f"archive:{archive}" in retention["volumes"]
    assert "archive" in compose()["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chown -R 10001:10001 /var/lib/sinkfleet" in dockerfile  # the volume's owner


def test_compose_workers_are_health_checked_on_healthz() -> None:
    services = compose()["services"]
    workers = [n for n, s in services.items() if s.get("command", [""])[0] == "worker"]
    assert sorted(workers) == ["audit-worker", "state-worker", "worker"]
    for name in workers:
        svc = services[name]
        port = svc["environment"]["SINKFLEET_METRICS_PORT"]
        test = " ".join(svc["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in test, name
        assert svc["environment"]["SINKFLEET_METRICS_HOST"] == "0.0.0.0"


def test_compose_cluster_profile_mirrors_stack_up_brokers_3(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KAFKA_LAYOUT_ENV:  # the default layout, whatever the runner's environment
        monkeypatch.delenv(name, raising=False)
    doc = compose()
    nodes = {n: s for n, s in doc["services"].items() if "cluster" in s.get("profiles", [])}
    assert sorted(nodes) == ["kafka-1", "kafka-2", "kafka-3"]
    local = plan_nodes(load_settings(home=tmp_path, state_dir=tmp_path / "s"), 3)
    voters = ",".join(f"{i}@kafka-{i}:9093" for i in (1, 2, 3))
    for node in local:
        svc = nodes[f"kafka-{node.id}"]
        env = svc["environment"]
        assert env["KAFKA_NODE_ID"] == str(node.id)
        assert svc["ports"] == [f"127.0.0.1:{node.port}:19092"]  # the stack's host ports
        assert f"EXTERNAL://127.0.0.1:{node.port}" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (
            "3", "2")
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    assert len({s["environment"]["CLUSTER_ID"] for s in nodes.values()}) == 1
    # setup waits for whichever Kafka runs; every client can bootstrap from the cluster
    deps = doc["services"]["setup"]["depends_on"]
    assert {n: deps[n]["required"] for n in ("kafka", *nodes)} == dict.fromkeys(
        ("kafka", *nodes), False)
    assert doc["services"]["worker"]["environment"]["SINKFLEET_KAFKA_BOOTSTRAP"] == \
        "${SINKFLEET_COMPOSE_KAFKA:-kafka:9092}"


# --- Kubernetes: roll-ups and retention ----------------------------------------------------
def deployment(name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in manifest_docs()
              if d.get("kind") == "Deployment" and d["metadata"]["name"] == name]
    return doc


def test_k8s_runs_rollups_as_its_own_login() -> None:
    pod = deployment("sinkfleet-rollups")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "rollups"
    env = {e["name"]: e for e in container["env"]}
    assert env["SINKFLEET_PG_USER"]["value"] == "sinkfleet_rollups_login"
    assert env["SINKFLEET_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == \
        "sinkfleet_rollups_login"
    state = env["SINKFLEET_STATE_DIR"]["value"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == [state]


def test_k8s_retention_keeps_its_archive_on_a_persistent_volume() -> None:
    retention = deployment("sinkfleet-retention")
    pod = retention["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["retention", "run", "--every"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == env["SINKFLEET_ARCHIVE_DIR"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (claim,) = [d for _, d in manifest_docs() if d.get("kind") == "PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert pod["securityContext"]["fsGroup"] == 10001  # writable by the image's user
    assert retention["spec"]["replicas"] == 1
    assert retention["spec"]["strategy"]["type"] == "Recreate"  # ReadWriteOnce volume
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {"rollups.yaml", "retention.yaml"} <= set(kustomization["resources"])
