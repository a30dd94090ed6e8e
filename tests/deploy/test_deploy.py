"""deploy/: Prometheus config, alert rules (+ their promtool unit tests), the Grafana
dashboard and the Kubernetes manifests.

promtool is required (scripts/install-system-deps.sh installs it): these tests fail, never
skip, without it. The metric lists below are the contract between the code and deploy/:
the worker's are checked against WorkerMetrics, the lag exporter's against its source, and
every sinkfleet_* name in the dashboard, the alerts and the ScaledObject against both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import TopicPartition
from prometheus_client.metrics import MetricWrapperBase

from sinkfleet.worker.metrics import WorkerMetrics
from tests.deploy.manifests import patched as _patched

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "sinkfleet-dashboard.json"
COMPOSE = ROOT / "docker-compose.yml"

P = ("group", "topic", "partition")
# name -> (type, labels). Counters by their exposed name (…_total).
WORKER_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sinkfleet_records_consumed_total": ("counter", ("group", "topic")),
    "sinkfleet_records_stored_total": ("counter", ("group", "sink")),
    "sinkfleet_records_duplicate_total": ("counter", ("group", "sink")),
    "sinkfleet_records_dead_lettered_total": ("counter", ("group", "topic", "stage")),
    "sinkfleet_batch_records": ("histogram", ("group",)),
    "sinkfleet_flush_seconds": ("histogram", ("group",)),
    "sinkfleet_kafka_commit_seconds": ("histogram", ("group",)),
    "sinkfleet_rebalances_total": ("counter", ("group",)),
    "sinkfleet_storage_retries_total": ("counter", ("group",)),
    "sinkfleet_fenced_batches_total": ("counter", ("group",)),
    "sinkfleet_dead_letter_send_failures_total": ("counter", ("group",)),
    "sinkfleet_assigned_partitions": ("gauge", ("group",)),
    "sinkfleet_paused_partitions": ("gauge", ("group",)),
    "sinkfleet_committed_offset": ("gauge", P),
    "sinkfleet_event_time_lag_seconds": ("gauge", P),
}
LAG_EXPORTER_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sinkfleet_group_committed_offset": ("gauge", P),
    "sinkfleet_group_log_end_offset": ("gauge", P),
    "sinkfleet_group_lag_records": ("gauge", P),
    "sinkfleet_group_lag_seconds": ("gauge", P),
    "sinkfleet_group_status": ("gauge", ("group", "status")),
    "sinkfleet_group_members": ("gauge", ("group",)),
    "sinkfleet_dlq_records": ("gauge", ("topic",)),
    "sinkfleet_exporter_scrape_seconds": ("gauge", ()),
}
STATUSES = {"OK", "WARN", "STALL", "REWIND", "ERROR"}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def exposed_series() -> dict[str, frozenset[str]]:
    """Every series name Prometheus stores for the metrics above -> its label names."""
    out: dict[str, frozenset[str]] = {"up": frozenset()}
    for name, (kind, labels) in {**WORKER_METRICS, **LAG_EXPORTER_METRICS}.items():
        if kind == "histogram":
            out[f"{name}_bucket"] = frozenset((*labels, "le"))
            out[f"{name}_sum"] = out[f"{name}_count"] = frozenset(labels)
        else:
            out[name] = frozenset(labels)
    return out


SERIES = exposed_series()


# --- promtool ------------------------------------------------------------------------------
def promtool(*args: str, cwd: Path = ROOT) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found on PATH: run scripts/install-system-deps.sh (Debian "
                    "package `prometheus`) or install Prometheus' promtool", pytrace=False)
    out = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = out.stdout + out.stderr
    assert out.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_check_config_local() -> None:
    promtool("check", "config", "deploy/prometheus/prometheus.yml")


def test_promtool_check_config_compose(tmp_path: Path) -> None:
    """The compose config loads its rules from /etc/prometheus (inside the container):
    check it with that directory replaced by a copy of deploy/prometheus."""
    text = (PROM / "prometheus.compose.yml").read_text()
    assert "/etc/prometheus/alerts.yml" in text
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/", f"{tmp_path}/"))
    promtool("check", "config", str(config))


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert "SUCCESS" in out


def test_promtool_test_rules() -> None:
    out = promtool("test", "rules", "deploy/prometheus/alerts_test.yml")
    assert "SUCCESS" in out


# --- Prometheus config and alert rules -------------------------------------------------------
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(PROM / "alerts.yml")["groups"] for r in g["rules"]
            if "alert" in r]


def test_both_prometheus_configs_scrape_the_same_jobs_and_load_the_rules() -> None:
    jobs = {}
    for name in ("prometheus.yml", "prometheus.compose.yml"):
        config = load_yaml(PROM / name)
        jobs[name] = {c["job_name"] for c in config["scrape_configs"]}
        assert [Path(f).name for f in config["rule_files"]] == ["alerts.yml"], name
    assert jobs["prometheus.yml"] == jobs["prometheus.compose.yml"]
    assert {"sinkfleet-workers", "sinkfleet-lag-exporter"} <= jobs["prometheus.yml"]
    # The alerts select on these job names.
    exprs = " ".join(r["expr"] for r in alert_rules())
    for job in set(re.findall(r'job="([^"]+)"', exprs)):
        assert job in jobs["prometheus.yml"], f"alerts.yml uses job {job!r}, not scraped"


def test_alerts_have_severity_summary_description() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "SinkfleetLagHigh", "SinkfleetGroupStalled", "SinkfleetDeadLetters",
        "SinkfleetWorkerDown", "SinkfleetLagExporterDown", "SinkfleetFencedBatches"}
    for r in rules:
        assert r["labels"]["severity"] in {"warning", "critical"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = load_yaml(PROM / "alerts_test.yml")["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested not firing"


# --- metric names: the code, the dashboard, the alerts, the ScaledObject ----------------------
def test_worker_metrics_match_the_list() -> None:
    """WorkerMetrics exposes exactly WORKER_METRICS, with these labels: a metric or label
    renamed in sinkfleet/worker/metrics.py fails here, and must be renamed in deploy/."""
    m = WorkerMetrics("g")
    values = {"group": "g", "topic": "t", "sink": "s", "stage": "decode"}
    wrappers: dict[str, Any] = {}
    for obj in vars(m).values():
        if isinstance(obj, MetricWrapperBase):
            family = obj.describe()[0]
            wrappers[family.name + ("_total" if family.type == "counter" else "")] = obj
    for name, (kind, labels) in WORKER_METRICS.items():
        if name == "sinkfleet_event_time_lag_seconds":
            m.last_committed_ts[TopicPartition("t", 0)] = 0
            continue
        metric = wrappers.get(name)
        assert metric is not None, f"WorkerMetrics has no {name}"
        child = metric.labels(**{lbl: ("0" if lbl == "partition" else values[lbl])
                                 for lbl in labels})
        if kind == "histogram":
            child.observe(1)
        elif kind == "counter":
            child.inc()
        else:
            child.set(1)
    exposed: dict[str, set[str]] = {}
    for family in m.registry.collect():
        for s in family.samples:
            if not s.name.endswith("_created"):
                exposed.setdefault(s.name, set()).update(s.labels)
    expected = {n: set(lbls) for n, lbls in SERIES.items()
                if n in WORKER_METRICS or n.rsplit("_", 1)[0] in WORKER_METRICS}
    assert exposed == expected


def test_lag_exporter_exports_the_listed_metrics() -> None:
    """The lag exporter builds its metrics from a Kafka snapshot: check its source names
    every metric of LAG_EXPORTER_METRICS."""
    package = ROOT / "sinkfleet" / "ops" / "lag"
    sources = sorted(package.glob("*.py"))
    assert sources, f"{package} missing: where does `sinkfleet lag-exporter` live now?"
    names = {name for source in sources
             for name in re.findall(r'"(sinkfleet_[a-z0-9_]+)"', source.read_text())}
    assert set(LAG_EXPORTER_METRICS) - names == set(), "not exported by the lag exporter"


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(f"{p['title']} / {t['refId']}", t["expr"])
            for p in panels(dashboard()) for t in p.get("targets", [])]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def parse_promql(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """Loosely: the metric selectors of ``expr`` (name, label names matched) and the label
    names of its by/without/on/ignoring/group_x clauses. Enough to check names, not syntax
    (promtool checks the syntax)."""
    text = _STRING.sub('""', expr)
    text = _RANGE.sub("", text)
    grouping = {lbl.strip() for m in _GROUPING.finditer(text) for lbl in m.group(1).split(",")
                if lbl.strip()}
    text = _GROUPING.sub(" ", text)
    selectors = []
    for m in _SELECTOR.finditer(text):
        selectors.append((m.group(1) or "", set(_MATCHER_LABEL.findall(m.group(2)))))
    text = _SELECTOR.sub(" ", text)
    for m in _IDENT.finditer(text):
        name = m.group(1)
        follows = text[m.end():].lstrip()[:1]
        if follows != "(" and name not in _KEYWORDS:
            selectors.append((name, set()))
    return selectors, grouping


def check_expr(where: str, expr: str) -> None:
    selectors, grouping = parse_promql(expr)
    assert selectors, f"{where}: no metric in {expr!r}"
    used_labels = set(TARGET_LABELS)
    for name, matched in selectors:
        assert name in SERIES, f"{where}: unknown metric {name!r} in {expr!r}"
        allowed = SERIES[name] | TARGET_LABELS
        assert matched <= allowed, f"{where}: {name} has no label {matched - allowed}"
        used_labels |= allowed
    assert grouping <= used_labels, f"{where}: grouping by unknown {grouping - used_labels}"


def test_parse_promql_finds_names_and_labels() -> None:
    selectors, grouping = parse_promql(
        'histogram_quantile(0.99, sum by (group, le) (rate(sinkfleet_flush_seconds_bucket'
        '{group=~"$group"}[$__rate_interval]))) / on(group) sinkfleet_group_members offset 5m'
        ' > 1e3')
    assert selectors == [("sinkfleet_flush_seconds_bucket", {"group"}),
                         ("sinkfleet_group_members", set())]
    assert grouping == {"group", "le"}
    with pytest.raises(AssertionError, match="unknown metric 'sinkfleet_records_written'"):
        check_expr("t", "rate(sinkfleet_records_written[5m])")
    with pytest.raises(AssertionError, match="no label"):
        check_expr("t", 'sinkfleet_records_stored_total{table="x"}')


def test_dashboard_exprs_use_only_known_metrics_and_labels() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for where, expr in exprs:
        check_expr(where, expr)


def test_alert_exprs_use_only_known_metrics_and_labels() -> None:
    for r in alert_rules():
        check_expr(r["alert"], r["expr"])


@pytest.mark.parametrize("path", [
    DASHBOARD, PROM / "alerts.yml", PROM / "alerts_test.yml", K8S / "scaledobject.yaml"],
    ids=lambda p: p.name)
def test_every_sinkfleet_name_mentioned_is_a_metric(path: Path) -> None:
    """Descriptions, variables and comments included: a renamed metric leaves no trace."""
    names = set(re.findall(r"\bsinkfleet_[a-z0-9_]+", path.read_text()))
    assert names, path
    assert names - set(SERIES) - set(WORKER_METRICS) - set(LAG_EXPORTER_METRICS) == set()


def test_dashboard_exprs_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording rule checked by
    promtool."""
    def fill(expr: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: "5m" if m.group(1).startswith("__")
                      else ".*", expr)
    rules = [{"record": f"dashboard:query_{i}", "expr": fill(expr)}
             for i, (_, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))


def test_dashboard_shape() -> None:
    dash = dashboard()
    assert dash["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
    used = {name for _, expr in dashboard_exprs() for name, _ in parse_promql(expr)[0]}
    assert {
        "sinkfleet_group_lag_seconds", "sinkfleet_group_lag_records", "sinkfleet_group_status",
        "sinkfleet_records_stored_total", "sinkfleet_records_dead_lettered_total",
        "sinkfleet_flush_seconds_bucket", "sinkfleet_batch_records_bucket",
        "sinkfleet_rebalances_total", "sinkfleet_assigned_partitions",
    } <= used
    flush = [e for _, e in dashboard_exprs() if "sinkfleet_flush_seconds_bucket" in e]
    assert any(e.startswith("histogram_quantile(0.5,") for e in flush)
    assert any(e.startswith("histogram_quantile(0.99,") for e in flush)


def test_compose_mounts_exist_and_grafana_provisions_the_dashboard() -> None:
    compose = load_yaml(COMPOSE)
    mounts: dict[str, str] = {}
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"docker-compose.yml mounts missing {source}"
                mounts[source] = target
    assert mounts["./deploy/prometheus/prometheus.compose.yml"] == \
        "/etc/prometheus/prometheus.yml"
    provider = load_yaml(DEPLOY / "grafana" / "dashboards.yml")["providers"][0]
    target = mounts["./deploy/grafana/sinkfleet-dashboard.json"]
    assert str(Path(target).parent) == provider["options"]["path"]
    assert mounts["./deploy/grafana/dashboards.yml"].startswith(
        "/etc/grafana/provisioning/dashboards/")


# --- Kubernetes ------------------------------------------------------------------------------
def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.rglob("*.y*ml")):
        loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert loaded, f"{path} is empty"
        docs.extend(loaded)
    return docs


def test_k8s_yaml_parses_and_kustomization_lists_existing_files() -> None:
    files = sorted(K8S.rglob("*.y*ml"))
    assert len(files) >= 4
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc is None or isinstance(doc, dict), path
    kustomization = load_yaml(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:  # a file, or a directory with its own
        assert (K8S / resource).is_file() or (K8S / resource / "kustomization.yaml").is_file(), \
            resource
    assert "secret.example.yaml" not in kustomization["resources"]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d.get("kind") == kind]


def worker_deployment() -> dict[str, Any]:
    workers = [d for d in by_kind("Deployment")
               if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"]
    assert len(workers) == 1
    return workers[0]


def test_scaledobject_targets_the_worker_deployment() -> None:
    (scaled,) = by_kind("ScaledObject")
    worker = worker_deployment()
    ref = scaled["spec"]["scaleTargetRef"]
    assert ref["name"] == worker["metadata"]["name"]
    assert ref.get("kind", "Deployment") == "Deployment"
    spec_name = worker["spec"]["template"]["spec"]["containers"][0]["args"][2]
    spec = load_yaml(ROOT / "workers" / f"{spec_name}.yaml")
    topics = [load_yaml(p) for p in (ROOT / "topics").glob("*.yaml")]
    assert scaled["spec"]["maxReplicaCount"] == max(t["partitions"] for t in topics)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert f'group="{spec["group"]}"' in trigger["metadata"]["query"]
    check_expr("ScaledObject", trigger["metadata"]["query"])


def test_worker_deployment_probes_and_metrics_port_agree() -> None:
    worker = worker_deployment()
    pod = worker["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    port = int(env["SINKFLEET_METRICS_PORT"]["value"])
    assert env["SINKFLEET_METRICS_HOST"]["value"] == "0.0.0.0"
    for secret in ("SINKFLEET_PG_PASSWORD", "SINKFLEET_REDIS_PASSWORD"):
        assert "secretKeyRef" in env[secret]["valueFrom"]
    # static membership per pod: unique names, kept across container restarts
    member = env["SINKFLEET_WORKER_INSTANCE_ID"]["valueFrom"]["fieldRef"]
    assert member["fieldPath"] == "metadata.name"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("metrics", port)
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert pod["spec"]["terminationGracePeriodSeconds"] == 60
    (config,) = by_kind("ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert not any("PASSWORD" in key for key in config["data"])


# --- least privilege: every process logs in as its own role --------------------------------
def _group_logins() -> dict[str, str]:
    """Worker spec name -> its group's login, as `db migrate` names it."""
    from sinkfleet.sink.postgres.group_roles import group_role, login_of

    return {load_yaml(p)["name"]: login_of(group_role(load_yaml(p)["group"]))
            for p in sorted((ROOT / "workers").glob("*.yaml"))}


SERVICE_LOGINS = {"lag-exporter": "sinkfleet_exporter_login",
                  "rollups": "sinkfleet_rollups_login", "serve": "sinkfleet_serve_login"}
# Retention detaches and drops partitions, which PostgreSQL allows only a table's owner:
# it runs as the owner, as `setup` and the migrate Job do, and needs no login's secret.
OWNER_SERVICES = {"retention"}


def test_compose_runs_every_process_as_its_own_login() -> None:
    compose = load_yaml(COMPOSE)
    owner = compose["services"]["postgres"]["environment"]["POSTGRES_USER"]
    logins = _group_logins()
    every = sorted([*logins.values(), *SERVICE_LOGINS.values()])
    assert sorted(compose["secrets"]) == every
    ran: dict[str, str] = {}
    for name, svc in compose["services"].items():
        if svc.get("image") != "sinkfleet:local":
            continue
        env = svc["environment"]
        user = env.get("SINKFLEET_PG_USER")
        if name == "setup":
            assert user == owner and env["SINKFLEET_PG_PASSWORD"]
            assert env["SINKFLEET_PG_WORKER_USER"] == ""  # no legacy all-groups login
            assert sorted(svc["secrets"]) == every
        elif name in OWNER_SERVICES:
            assert user == owner and env["SINKFLEET_PG_PASSWORD"], name
            assert "secrets" not in svc, name
        else:
            args = svc["command"]
            login = logins[args[2]] if args[0] == "worker" else SERVICE_LOGINS[args[0]]
            assert user == login, name
            assert svc["secrets"] == [login], name  # only its own password
            assert "SINKFLEET_PG_PASSWORD" not in env, name
            ran[args[2] if args[0] == "worker" else args[0]] = login
        assert env["SINKFLEET_PG_SECRETS_DIR"] == "/run/secrets", name
    assert set(ran) == {*logins, *SERVICE_LOGINS}, "a process without a service"


def _k8s_login(container: dict[str, Any]) -> tuple[str, str]:
    env = {e["name"]: e for e in container["env"]}
    return (env["SINKFLEET_PG_USER"]["value"],
            env["SINKFLEET_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"])


def test_k8s_runs_every_deployment_as_its_own_login() -> None:
    (config,) = by_kind("ConfigMap")
    assert "SINKFLEET_PG_USER" not in config["data"]
    base = worker_deployment()
    logins = _group_logins()
    seen = {}
    for kust in [K8S / "worker" / "kustomization.yaml",
                 *sorted((K8S / "groups").glob("*/kustomization.yaml"))]:
        ops = [op for p in load_yaml(kust).get("patches", [])
               for op in yaml.safe_load(p["patch"])]
        (container,) = _patched(base, ops)["spec"]["template"]["spec"]["containers"]
        spec = container["args"][2]
        assert _k8s_login(container) == (logins[spec], logins[spec]), spec
        seen[spec] = logins[spec]
    assert set(seen) == set(logins), "a worker group without a Deployment"
    (exporter,) = [d for d in by_kind("Deployment")
                   if d["metadata"]["name"] == "sinkfleet-lag-exporter"]
    (container,) = exporter["spec"]["template"]["spec"]["containers"]
    assert _k8s_login(container) == (SERVICE_LOGINS["lag-exporter"],) * 2
    (serve,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "sinkfleet-serve"]
    (container,) = serve["spec"]["template"]["spec"]["containers"]
    assert _k8s_login(container) == (SERVICE_LOGINS["serve"],) * 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    (job,) = by_kind("Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in migrate["env"]}
    assert env["SINKFLEET_PG_USER"]["value"] == "sinkfleet"
    assert env["SINKFLEET_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == \
        "SINKFLEET_PG_PASSWORD"
    (mount,) = migrate["volumeMounts"]
    assert env["SINKFLEET_PG_SECRETS_DIR"]["value"] == mount["mountPath"]
    (volume,) = job["spec"]["template"]["spec"]["volumes"]
    assert sorted(i["path"] for i in volume["secret"]["items"]) == sorted(
        [*logins.values(), *SERVICE_LOGINS.values()])
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    # only the Job sees the owner's password
    owners = [d["metadata"]["name"] for d in k8s_docs()
              if re.search(r"key: SINKFLEET_PG_PASSWORD\b", yaml.safe_dump(d))]
    assert owners == ["sinkfleet-migrate", *(f"sinkfleet-{s}" for s in sorted(OWNER_SERVICES))]
