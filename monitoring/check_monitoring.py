#!/usr/bin/env python3
"""Checks the monitoring configuration of both deployments; run through
Scripts/check-monitoring.sh, which installs promtool, PyYAML and checks for kubectl first.

    check_monitoring.py            check everything, exit 1 on any failure
    check_monitoring.py --write    regenerate Manifests/monitoring/prometheusrule.yaml from
                                   monitoring/prometheus/alerts.yml, then check

What is checked, and why:
- Prometheus (Compose): `promtool check config` on prometheus.yml with its rule path pointed at
  this checkout, `promtool check rules` and `promtool test rules` (alerts.test.yml).
- Every PromQL expression (alert rules and dashboard queries) names only metrics that exist:
  the services' own (each also looked up in the Rust sources, so a renamed metric fails here),
  RabbitMQ's (names from the rabbitmq_prometheus plugin) and Prometheus' own. A typo in a
  metric name is otherwise silent: the panel is empty, the alert never fires.
- Every `job` a query or rule names is a scrape job of both deployments.
- The dashboard: valid JSON, fixed uid, every panel and query uses the `datasource` template
  variable (so it works with Compose's provisioned datasource and with kube-prometheus-stack's),
  no unknown template variable, PromQL that parses (`promtool check rules` on the queries as
  recording rules), panels inside the 24-column grid and not overlapping.
- Grafana provisioning (Compose): the datasource uid and URL, the dashboards path.
- Kubernetes: `kubectl kustomize Manifests/monitoring` renders; the PrometheusRule holds exactly
  the groups of alerts.yml; the PodMonitors select `app: <service>` pods on the agreed port names
  and set the same job names as Compose's scrape configs (same RabbitMQ metric families too);
  the dashboard ConfigMap carries grafana_dashboard: "1" and the same bytes as the JSON file.

The last line is "N passed, N failed".
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "monitoring" / "prometheus"
PROMETHEUS_YML = PROM_DIR / "prometheus.yml"
ALERTS_YML = PROM_DIR / "alerts.yml"
ALERTS_TEST_YML = PROM_DIR / "alerts.test.yml"
GRAFANA_DIR = ROOT / "monitoring" / "grafana" / "provisioning"
ALERTMANAGER_DIR = ROOT / "monitoring" / "alertmanager"
ALERTMANAGER_YML = ALERTMANAGER_DIR / "alertmanager.yml"
ALERTMANAGER_START = ALERTMANAGER_DIR / "start.sh"
COMPOSE_YML = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "Manifests" / "monitoring"
PROMETHEUS_RULE_YAML = K8S_DIR / "prometheusrule.yaml"
DASHBOARD_JSON = K8S_DIR / "dashboards" / "microservices.json"

NAMESPACE = "microservices"
PROMETHEUS_RULE_NAME = "microservices-alerts"
DASHBOARD_UID = "microservices-overview"
DATASOURCE_UID = "prometheus"  # the Compose-provisioned datasource
DATASOURCE_REF = "${datasource}"

# service -> (pod label `app`, container port name, port number in Compose)
SERVICES = {
    "api-gateway": ("http", 3000),
    "inventory-app": ("http", 8080),
    "billing-app": ("http", 8080),
}
# job name -> (metrics path, params) for RabbitMQ's plugin on port `prometheus` (15692)
RABBITMQ_JOBS = {
    "rabbitmq": ("/metrics", {}),
    "rabbitmq-queues": (
        "/metrics/detailed",
        {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
    ),
}
RABBITMQ_PORT = ("prometheus", 15692)
SCRAPE_JOBS = set(SERVICES) | set(RABBITMQ_JOBS)

# Metrics the services expose on /metrics (common/src/metrics.rs and each service's own).
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SERVICE_COUNTERS_GAUGES = {
    "http_requests_total",
    "http_requests_in_flight",
    "billing_messages_total",
    "billing_orders_stored_total",
    "billing_duplicates_total",
    "billing_database_retries_total",
}
SERVICE_HISTOGRAMS = {
    "http_request_duration_seconds",
    "gateway_publish_seconds",
    "billing_processing_seconds",
    "billing_batch_size",
}
SERVICE_SOURCES = ["common/src", "api-gateway/src", "inventory-app/src", "billing-app/src"]

# RabbitMQ 4's rabbitmq_prometheus plugin (every name below checked on 4.0.5; 3.13 has them
# too): the per-queue families scraped from /metrics/detailed (prefix rabbitmq_detailed_) and
# the global counters of /metrics.
RABBITMQ_METRICS = {
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
    "rabbitmq_detailed_queue_process_reductions_total",
    "rabbitmq_detailed_queue_consumers",
    "rabbitmq_global_messages_received_total",
    "rabbitmq_global_messages_received_confirm_total",
    "rabbitmq_global_messages_routed_total",
    "rabbitmq_global_messages_confirmed_total",
    "rabbitmq_global_messages_delivered_total",
    "rabbitmq_global_messages_acknowledged_total",
    "rabbitmq_global_messages_redelivered_total",
    "rabbitmq_global_messages_dead_lettered_rejected_total",
    "rabbitmq_global_messages_dead_lettered_delivery_limit_total",
    "rabbitmq_global_publishers",
    "rabbitmq_global_consumers",
    "rabbitmq_connections",
    "rabbitmq_channels",
    "rabbitmq_queues",
    "rabbitmq_identity_info",
    "rabbitmq_build_info",
}
# Series Prometheus writes itself.
PROMETHEUS_METRICS = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2", "start", "end",
}
GRAFANA_BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def section(self, title: str) -> None:
        print(f"\n== {title}")

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed += 1
            print(f"  FAIL  {what}")
            for line in detail.strip().splitlines():
                print(f"        {line}")
        return ok


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


# --- PromQL ------------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects. Not a parser: strips what cannot be a
    metric name (strings, label matchers, durations, grouping clauses, numbers, function
    calls, keywords) and returns the identifiers left."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    s = re.sub(r"(?<![\w:.])\d+(\.\d*)?([eE][+-]?\d+)?", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        rest = s[m.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if m.group(0).lower() in PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def known_metrics() -> set[str]:
    known = set(SERVICE_COUNTERS_GAUGES) | RABBITMQ_METRICS | PROMETHEUS_METRICS
    for h in SERVICE_HISTOGRAMS:
        known |= {h + suffix for suffix in HISTOGRAM_SUFFIXES}
    return known


def jobs_named(expr: str) -> set[str]:
    """Job names an expression matches literally (job="x" or job=~"a|b")."""
    jobs = set()
    for m in re.finditer(r'\bjob\s*=~?\s*"([^"]*)"', expr):
        value = m.group(1)
        if "$" in value:
            continue  # a template variable, checked separately
        jobs |= {j for j in value.split("|") if j}
    return jobs


def check_expressions(r: Report, where: str, exprs: list[tuple[str, str]]) -> None:
    known = known_metrics()
    unknown = []
    bad_jobs = []
    for label, expr in exprs:
        names = metric_names(expr)
        if not names:
            unknown.append(f"{label}: selects no metric at all: {expr}")
        for n in sorted(names - known):
            unknown.append(f"{label}: {n}")
        for j in sorted(jobs_named(expr) - SCRAPE_JOBS):
            bad_jobs.append(f"{label}: job {j}")
    r.check(not unknown, f"{where}: {len(exprs)} expressions name only known metrics",
            "\n".join(unknown))
    r.check(not bad_jobs, f"{where}: every job named is a scrape job ({', '.join(sorted(SCRAPE_JOBS))})",
            "\n".join(bad_jobs))


def check_service_metrics_in_source(r: Report) -> None:
    text = ""
    for d in SERVICE_SOURCES:
        for f in sorted((ROOT / d).rglob("*.rs")):
            text += f.read_text(encoding="utf-8", errors="replace")
    missing = [n for n in sorted(SERVICE_COUNTERS_GAUGES | SERVICE_HISTOGRAMS)
               if f'"{n}"' not in text]
    r.check(not missing and bool(text),
            f"the {len(SERVICE_COUNTERS_GAUGES | SERVICE_HISTOGRAMS)} service metrics used are defined in {', '.join(SERVICE_SOURCES)}",
            "not found as a string literal: " + ", ".join(missing) if text else "no Rust sources found")


# --- Prometheus ----------------------------------------------------------------------------


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def check_prometheus(r: Report, promtool: str) -> None:
    r.section("Prometheus (Compose): monitoring/prometheus/")
    # prometheus.yml names its rule file by the path inside the container; check a copy of
    # the directory with that path pointed at the copy.
    with tempfile.TemporaryDirectory() as tmp:
        for f in PROM_DIR.iterdir():
            if f.is_file():
                shutil.copy(f, tmp)
        cfg = Path(tmp) / "prometheus.yml"
        cfg.write_text(cfg.read_text(encoding="utf-8").replace("/etc/prometheus/", tmp + "/"),
                       encoding="utf-8")
        res = run([promtool, "check", "config", str(cfg)])
        r.check(res.returncode == 0, "promtool check config prometheus.yml (rule files included)",
                res.stdout + res.stderr)

    config = load_yaml(PROMETHEUS_YML)
    r.check(config.get("rule_files") == ["/etc/prometheus/alerts.yml"],
            "prometheus.yml loads /etc/prometheus/alerts.yml (the directory's path in the container)",
            f"rule_files: {config.get('rule_files')}")

    jobs = {sc["job_name"]: sc for sc in config.get("scrape_configs", [])}
    problems = []
    # Compose may run a service more than once under several names (the gateways behind the
    # entry): every Compose service running a service's image is one target of its job.
    compose_services = load_yaml(COMPOSE_YML).get("services", {})
    for svc, (_, port) in SERVICES.items():
        names = sorted(name for name, cs in compose_services.items()
                       if str(cs.get("image", "")).split(":")[0] == svc) or [svc]
        expected = sorted(f"{name}:{port}" for name in names)
        sc = jobs.get(svc)
        targets = [t for g in (sc or {}).get("static_configs", []) for t in g.get("targets", [])]
        if sorted(targets) != expected or (sc or {}).get("metrics_path", "/metrics") != "/metrics":
            problems.append(f"job {svc}: expected targets {expected} on /metrics, got {targets}")
    for job, (path, params) in RABBITMQ_JOBS.items():
        sc = jobs.get(job) or {}
        targets = [t for g in sc.get("static_configs", []) for t in g.get("targets", [])]
        if (targets != [f"rabbitmq:{RABBITMQ_PORT[1]}"] or sc.get("metrics_path", "/metrics") != path
                or (sc.get("params") or {}) != params):
            problems.append(f"job {job}: expected rabbitmq:{RABBITMQ_PORT[1]}{path} {params}, got "
                            f"{targets} {sc.get('metrics_path')} {sc.get('params')}")
    r.check(not problems, "scrape jobs: every api-gateway service on 3000, inventory-app:8080, "
            "billing-app:8080, rabbitmq:15692 (/metrics and /metrics/detailed)", "\n".join(problems))

    am_targets = [t for am in (config.get("alerting") or {}).get("alertmanagers", [])
                  for g in am.get("static_configs", []) for t in g.get("targets", [])]
    r.check(am_targets == ["alertmanager:9093"],
            "prometheus.yml sends its alerts to alertmanager:9093 (the Compose service)",
            f"alerting targets: {am_targets}")

    res = run([promtool, "check", "rules", str(ALERTS_YML)])
    r.check(res.returncode == 0, "promtool check rules alerts.yml", res.stdout + res.stderr)

    res = run([promtool, "test", "rules", ALERTS_TEST_YML.name], cwd=PROM_DIR)
    tests = len(load_yaml(ALERTS_TEST_YML).get("tests", []))
    r.check(res.returncode == 0, f"promtool test rules alerts.test.yml ({tests} test groups)",
            res.stdout + res.stderr)

    rules = [(f"alert {rule.get('alert') or rule.get('record')}", rule["expr"])
             for g in load_yaml(ALERTS_YML)["groups"] for rule in g["rules"]]
    check_expressions(r, "alerts.yml", rules)

    # Every alert has a unit test that expects it to fire.
    tested = {t.get("alertname") for test in load_yaml(ALERTS_TEST_YML)["tests"]
              for t in test.get("alert_rule_test", []) if t.get("exp_alerts")}
    untested = sorted({rule["alert"] for g in load_yaml(ALERTS_YML)["groups"]
                       for rule in g["rules"] if "alert" in rule} - tested)
    r.check(not untested, "every alert has a test that makes it fire",
            "no firing test for: " + ", ".join(untested))

    missing = [rule.get("alert") for g in load_yaml(ALERTS_YML)["groups"] for rule in g["rules"]
               if "alert" in rule and not (rule.get("labels", {}).get("severity")
                                           and rule.get("annotations", {}).get("summary")
                                           and rule.get("annotations", {}).get("description"))]
    r.check(not missing, "every alert has a severity label, a summary and a description",
            ", ".join(missing))


# --- Grafana -------------------------------------------------------------------------------


def panels_of(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row holds its panels
    return out


def check_dashboard(r: Report, promtool: str) -> None:
    r.section(f"Grafana dashboard: {DASHBOARD_JSON.relative_to(ROOT)}")
    try:
        raw = DASHBOARD_JSON.read_text(encoding="utf-8")
        dash = json.loads(raw)
    except (OSError, json.JSONDecodeError) as e:
        r.check(False, "the dashboard is valid JSON", str(e))
        return
    r.check(True, f"valid JSON ({len(raw)} bytes)")
    # kubectl apply copies the ConfigMap into an annotation limited to 256 KiB.
    r.check(len(raw.encode()) < 200 * 1024, "small enough for a ConfigMap applied with kubectl apply",
            f"{len(raw.encode())} bytes")
    r.check(dash.get("uid") == DASHBOARD_UID and dash.get("id") is None,
            f"fixed uid {DASHBOARD_UID!r} and no database id (provisioned, not imported)",
            f"uid={dash.get('uid')!r} id={dash.get('id')!r}")
    r.check("__inputs" not in dash, "no __inputs (import-only placeholders break file provisioning)")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    r.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
            "template variable `datasource` of type datasource, query prometheus",
            json.dumps(ds))

    panels = panels_of(dash)
    queries: list[tuple[str, str]] = []
    bad_ds, bad_vars, bad_grid, ids = [], [], [], []
    boxes = []
    for p in panels:
        ids.append(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            bad_grid.append(f"panel {p.get('id')} {p.get('title')!r}: gridPos {g}")
        else:
            boxes.append((p, g))
        if p.get("type") == "row":
            if p.get("targets"):
                bad_ds.append(f"row {p.get('title')!r} has queries")
            continue
        name = f"panel {p.get('id')} {p.get('title')!r}"
        if (p.get("datasource") or {}).get("uid") != DATASOURCE_REF:
            bad_ds.append(f"{name}: datasource {p.get('datasource')}")
        if not p.get("targets"):
            bad_ds.append(f"{name}: no queries")
        for t in p.get("targets", []):
            if (t.get("datasource") or {}).get("uid") != DATASOURCE_REF:
                bad_ds.append(f"{name} query {t.get('refId')}: datasource {t.get('datasource')}")
            expr = t.get("expr", "")
            if not expr.strip():
                bad_ds.append(f"{name} query {t.get('refId')}: empty expr")
                continue
            queries.append((f"{name} {t.get('refId')}", expr))
            for v in re.findall(r"\$\{?(\w+)", expr):
                if v not in variables and v not in GRAFANA_BUILTIN_VARS:
                    bad_vars.append(f"{name} {t.get('refId')}: ${v}")
    for i, (p, g) in enumerate(boxes):
        for q, h in boxes[i + 1:]:
            if (g["x"] < h["x"] + h["w"] and h["x"] < g["x"] + g["w"]
                    and g["y"] < h["y"] + h["h"] and h["y"] < g["y"] + g["h"]):
                bad_grid.append(f"{p.get('title')!r} overlaps {q.get('title')!r}")

    r.check(not bad_ds, f"{len(panels)} panels: each queries through ${{datasource}}", "\n".join(bad_ds))
    r.check(len(ids) == len(set(ids)) and None not in ids, "panel ids are unique", str(ids))
    r.check(not bad_grid, "panels fit the 24-column grid without overlapping", "\n".join(bad_grid))
    r.check(not bad_vars, "queries use only defined template variables", "\n".join(bad_vars))

    # PromQL syntax: the queries as recording rules, Grafana variables replaced by values.
    job_var = variables.get("job", {})
    substitutions = {
        "__rate_interval": "1m", "__interval": "15s", "__range": "1h",
        "__interval_ms": "15000", "__range_s": "3600",
        "job": job_var.get("allValue") or ".*",
    }
    rules = []
    for i, (label, expr) in enumerate(queries):
        concrete = re.sub(r"\$\{?(\w+)\}?", lambda m: substitutions.get(m.group(1), m.group(0)), expr)
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        path = f.name
    res = run([promtool, "check", "rules", path])
    Path(path).unlink()
    r.check(res.returncode == 0, f"{len(queries)} queries parse as PromQL (promtool)",
            res.stdout + res.stderr)
    check_expressions(r, "dashboard", queries)


def check_grafana_provisioning(r: Report) -> None:
    r.section("Grafana provisioning (Compose): monitoring/grafana/provisioning/")
    ds = load_yaml(GRAFANA_DIR / "datasources" / "prometheus.yml")
    entries = ds.get("datasources", [])
    r.check(len(entries) == 1 and entries[0].get("uid") == DATASOURCE_UID
            and entries[0].get("type") == "prometheus"
            and entries[0].get("url") == "http://prometheus:9090",
            f"datasource uid {DATASOURCE_UID!r}, type prometheus, url http://prometheus:9090",
            json.dumps(entries))
    dp = load_yaml(GRAFANA_DIR / "dashboards" / "dashboards.yml")
    providers = dp.get("providers", [])
    r.check(len(providers) == 1 and providers[0].get("type") == "file"
            and providers[0].get("options", {}).get("path") == "/var/lib/grafana/dashboards",
            "dashboard file provider reads /var/lib/grafana/dashboards", json.dumps(providers))


# --- Kubernetes ----------------------------------------------------------------------------


class LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, as they are written in alerts.yml."""


def _str_representer(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


LiteralDumper.add_representer(str, _str_representer)


def prometheus_rule_text() -> str:
    groups = load_yaml(ALERTS_YML)["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": PROMETHEUS_RULE_NAME},
        "spec": {"groups": groups},
    }
    header = (
        "# GENERATED from monitoring/prometheus/alerts.yml by `Scripts/check-monitoring.sh --write`.\n"
        "# Do not edit: change alerts.yml (where the thresholds are explained) and regenerate.\n"
        "# Scripts/check-monitoring.sh fails while the two differ.\n"
    )
    return header + yaml.dump(rule, Dumper=LiteralDumper, sort_keys=False, width=1000,
                              allow_unicode=True, default_flow_style=False)


def check_kubernetes(r: Report, kubectl: str | None) -> None:
    r.section("Kubernetes: Manifests/monitoring/")
    alerts_groups = load_yaml(ALERTS_YML)["groups"]
    source_rule = load_yaml(PROMETHEUS_RULE_YAML)
    r.check(source_rule.get("spec", {}).get("groups") == alerts_groups,
            "prometheusrule.yaml holds the groups of alerts.yml (else run Scripts/check-monitoring.sh --write)")

    if not kubectl:
        r.check(False, "render with kubectl kustomize",
                "kubectl is not installed: the Kubernetes manifests were NOT rendered or checked. "
                "Install kubectl and run again.")
        return
    res = run([kubectl, "kustomize", str(K8S_DIR)])
    if not r.check(res.returncode == 0, f"{kubectl} kustomize Manifests/monitoring renders",
                   res.stderr):
        return
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    print(f"        rendered: {', '.join(kinds)}")
    r.check(all(d["metadata"].get("namespace") == NAMESPACE for d in docs),
            f"every object is in namespace {NAMESPACE}")

    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    r.check(len(rules) == 1 and rules[0]["apiVersion"] == "monitoring.coreos.com/v1"
            and rules[0]["spec"]["groups"] == alerts_groups,
            f"rendered PrometheusRule groups == alerts.yml groups ({len(alerts_groups)} groups, "
            f"{sum(len(g['rules']) for g in alerts_groups)} rules)")

    # PodMonitors: which pods, which port, which job name.
    seen: dict[str, tuple] = {}
    problems = []
    for d in docs:
        if d["kind"] != "PodMonitor":
            continue
        spec = d["spec"]
        selector = spec.get("selector", {})
        if selector.get("matchExpressions") or len(selector.get("matchLabels", {})) != 1:
            problems.append(f"{d['metadata']['name']}: selector must be exactly app: <service>: {selector}")
        app = selector.get("matchLabels", {}).get("app")
        if spec.get("namespaceSelector") not in (None, {}, {"matchNames": [NAMESPACE]}):
            problems.append(f"{d['metadata']['name']}: namespaceSelector {spec['namespaceSelector']}")
        for ep in spec.get("podMetricsEndpoints", []):
            jobs = [rl.get("replacement") for rl in ep.get("relabelings", [])
                    if rl.get("targetLabel") == "job" and not rl.get("sourceLabels")
                    and rl.get("action", "replace") == "replace"]
            if len(jobs) != 1:
                problems.append(f"{d['metadata']['name']} port {ep.get('port')}: no single job relabeling")
                continue
            seen[jobs[0]] = (app, ep.get("port"), ep.get("path", "/metrics"), ep.get("params") or {})
    expected = {svc: (svc, port, "/metrics", {}) for svc, (port, _) in SERVICES.items()}
    expected |= {job: ("rabbitmq", RABBITMQ_PORT[0], path, params)
                 for job, (path, params) in RABBITMQ_JOBS.items()}
    for job, want in expected.items():
        if seen.get(job) != want:
            problems.append(f"job {job}: want app={want[0]} port={want[1]} {want[2]} {want[3]}, "
                            f"got {seen.get(job)}")
    for job in sorted(set(seen) - set(expected)):
        problems.append(f"unexpected job {job}")
    r.check(not problems,
            "PodMonitors: app=<service> pods, ports http / prometheus, job names as in Compose "
            f"({', '.join(sorted(expected))})", "\n".join(problems))

    compose_jobs = {sc["job_name"] for sc in load_yaml(PROMETHEUS_YML)["scrape_configs"]} - {"prometheus"}
    r.check(compose_jobs == set(seen),
            "Compose scrape jobs and Kubernetes scrape jobs are the same set",
            f"compose {sorted(compose_jobs)} vs kubernetes {sorted(seen)}")

    cms = [d for d in docs if d["kind"] == "ConfigMap"]
    dash_cm = [c for c in cms if "microservices.json" in (c.get("data") or {})]
    ok = (len(dash_cm) == 1
          and dash_cm[0]["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
          and dash_cm[0]["data"]["microservices.json"] == DASHBOARD_JSON.read_text(encoding="utf-8"))
    r.check(ok, f"ConfigMap {dash_cm[0]['metadata']['name'] if dash_cm else '?'}: label "
            "grafana_dashboard=\"1\", data = dashboards/microservices.json byte for byte")


def check_alertmanager(r: Report) -> None:
    r.section("Alertmanager (Compose): monitoring/alertmanager/")
    # No amtool here checks this file: Debian's (0.25) predates url_file (0.26). The end-to-end
    # test runs it (Scripts/e2e-compose.sh); this checks what a typo would silently break.
    try:
        config = load_yaml(ALERTMANAGER_YML)
    except (OSError, yaml.YAMLError) as e:
        r.check(False, "alertmanager.yml is valid YAML", str(e))
        return
    receivers = {rc.get("name"): rc for rc in config.get("receivers", [])}
    route = config.get("route", {})
    r.check(route.get("receiver") == "webhook" and "webhook" in receivers,
            "the top route delivers to the receiver webhook", json.dumps(route))
    unknown = sorted({rt.get("receiver") for rt in route.get("routes", []) if rt.get("receiver")}
                     - set(receivers))
    r.check(not unknown, "every route names a defined receiver", ", ".join(unknown))
    hooks = (receivers.get("webhook") or {}).get("webhook_configs", [])
    r.check(len(hooks) == 1 and hooks[0].get("url_file") == "/run/alertmanager/webhook-url"
            and "url" not in hooks[0] and hooks[0].get("send_resolved") is True,
            "webhook: url_file /run/alertmanager/webhook-url (written by start.sh), send_resolved",
            json.dumps(hooks))
    none = receivers.get("none")
    r.check(none is not None and set(none) == {"name"},
            "receiver none delivers nothing (used while ALERT_WEBHOOK_URL is empty)", json.dumps(none))
    # start.sh turns `  receiver: webhook` into `  receiver: none` when no URL is set.
    lines = [line for line in ALERTMANAGER_YML.read_text(encoding="utf-8").splitlines()
             if line == "  receiver: webhook"]
    start = ALERTMANAGER_START.read_text(encoding="utf-8")
    r.check(len(lines) == 1 and "receiver:\\) webhook$/" in start,
            "start.sh can switch the top route to none: exactly one '  receiver: webhook' line",
            f"{len(lines)} such lines")
    groups = load_yaml(ALERTS_YML)["groups"]
    alerts = {rule["alert"] for g in groups for rule in g["rules"] if "alert" in rule}
    named = set()
    for rule in config.get("inhibit_rules", []):
        for m in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            name, _, value = (part.strip() for part in m.partition("="))
            if name == "alertname":
                named.add(value.strip('"'))
    r.check(named <= alerts, "inhibit rules name only alerts of alerts.yml",
            ", ".join(sorted(named - alerts)))

    service = load_yaml(COMPOSE_YML).get("services", {}).get("alertmanager", {})
    ok = (service.get("profiles") == ["monitoring"]
          and "ALERT_WEBHOOK_URL" in (service.get("environment") or {})
          and any(str(t).startswith("/run/alertmanager") for t in service.get("tmpfs", [])))
    r.check(ok, "docker-compose.yml: alertmanager in the monitoring profile, ALERT_WEBHOOK_URL "
            "passed, /run/alertmanager on a tmpfs", json.dumps(service, default=str)[:300])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true",
                    help="regenerate Manifests/monitoring/prometheusrule.yaml from alerts.yml first")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--kubectl", default="", help="kubectl to render with; empty: none available")
    args = ap.parse_args()

    if args.write:
        PROMETHEUS_RULE_YAML.write_text(prometheus_rule_text(), encoding="utf-8")
        print(f"wrote {PROMETHEUS_RULE_YAML.relative_to(ROOT)} from {ALERTS_YML.relative_to(ROOT)}")

    r = Report()
    r.section("Service metrics")
    check_service_metrics_in_source(r)
    check_prometheus(r, args.promtool)
    check_alertmanager(r)
    check_grafana_provisioning(r)
    check_dashboard(r, args.promtool)
    check_kubernetes(r, args.kubectl or None)
    print(f"\nmonitoring: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
