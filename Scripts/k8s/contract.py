#!/usr/bin/env python3
"""The deployment contract: the Kubernetes manifests, docker-compose.yml and the services agree.

Reads three sources of truth and fails on any disagreement between them:

- the rendered manifests (`kubectl kustomize Manifests/`, given as a file);
- docker-compose.yml, interpolated as Compose would with no .env (a fresh clone's defaults);
- the services themselves: `<binary> config` lists every variable a service reads, with its
  default, and exits non-zero on a value it would refuse; the Rust routers give the paths a
  probe may use.

Usage: contract.py RENDERED_YAML [--compose FILE] [--bin-dir DIR] [--repo DIR]
Exit status 0 when every check passes, 1 otherwise. Scripts/k8s/test_contract.py shows each
check failing on a deliberately broken copy of the inputs.
"""

from __future__ import annotations

import argparse
import base64
import copy
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[2]

NAMESPACE = "microservices"
APPS = ("api-gateway", "inventory-app", "billing-app")
DATABASES = {"inventory-db": "movies", "billing-db": "orders"}
COMPONENTS = APPS + tuple(DATABASES) + ("rabbitmq",)
WORKLOAD_KINDS = {
    "api-gateway": "Deployment",
    "inventory-app": "Deployment",
    "billing-app": "StatefulSet",
    "inventory-db": "StatefulSet",
    "billing-db": "StatefulSet",
    "rabbitmq": "StatefulSet",
}
WORKLOADS = ("Deployment", "StatefulSet", "CronJob")
# A CronJob per database: pg_dump into its own volume (Manifests/base/backups.yaml).
BACKUPS = {"inventory-db-backup": "inventory-db", "billing-db-backup": "billing-db"}
BACKUP_VOLUME_PATH = "/backups"
# HTTPS through an Ingress (Manifests/components/ingress): its documented host and TLS Secret.
INGRESS_HOST = "microservices.local"
INGRESS_TLS_SECRET = "api-gateway-tls"
# Where ingress controllers run: K3s's Traefik in kube-system, ingress-nginx in its own.
INGRESS_CONTROLLER_NAMESPACES = ({"kubernetes.io/metadata.name": "kube-system"},
                                 {"kubernetes.io/metadata.name": "ingress-nginx"})
UPSTREAM_IMAGES = {
    "inventory-db": "postgres:15-alpine",
    "billing-db": "postgres:15-alpine",
    "rabbitmq": "rabbitmq:4.3-management-alpine",
    "inventory-db-backup": "postgres:15-alpine",
    "billing-db-backup": "postgres:15-alpine",
}
# The ports the upstream servers listen on (the services' own ports come from their config).
SERVER_PORTS = {"inventory-db": 5432, "billing-db": 5432, "rabbitmq": 5672}
POD_LABELS = ("app", "app.kubernetes.io/name", "app.kubernetes.io/part-of")
# Tunables with safe defaults: a deployment may leave them unset. Everything else a service
# reads must be set explicitly by Compose and by Kubernetes.
OPTIONAL_VARIABLE = re.compile(
    r"^(.*_POOL_SIZE|.*_ACQUIRE_TIMEOUT_SECONDS|SHUTDOWN_TIMEOUT_SECONDS|UPSTREAM_TIMEOUT_SECONDS"
    r"|PUBLISH_CONFIRM_TIMEOUT_SECONDS|PUBLISH_MAX_UNCONFIRMED|HTTP_HEADER_TIMEOUT_SECONDS"
    r"|HTTP_REQUEST_TIMEOUT_SECONDS|HTTP_WRITE_TIMEOUT_SECONDS|HTTP_MAX_CONNECTIONS"
    r"|HTTP_MAX_REQUESTS_IN_FLIGHT"
    r"|BILLING_PREFETCH|RUST_LOG|LOG_FORMAT|LOG_DIR)$"
)
# One broker node (RABBITMQ_HOST) or a cluster's nodes (RABBITMQ_HOSTS): a service needs one of
# the two, and reads RABBITMQ_HOSTS when both are set.
ALTERNATIVES = {"RABBITMQ_HOST": "RABBITMQ_HOSTS", "RABBITMQ_HOSTS": "RABBITMQ_HOST"}
# Which database a service's variables name, e.g. INVENTORY_DB_* → inventory-db.
DB_PREFIXES = {"INVENTORY_DB": "inventory-db", "BILLING_DB": "billing-db"}
# What a probe-less, root-capable or unbounded container would look like is checked by
# check_pod_hardening; these are the allowed traffic flows checked by check_network_flows.
ALLOWED_FLOWS = {
    ("api-gateway", "inventory-app", "http"),
    ("api-gateway", "billing-app", "http"),
    ("api-gateway", "rabbitmq", "amqp"),
    ("inventory-app", "inventory-db", "postgres"),
    ("billing-app", "billing-db", "postgres"),
    ("billing-app", "rabbitmq", "amqp"),
    ("inventory-db-backup", "inventory-db", "postgres"),
    ("billing-db-backup", "billing-db", "postgres"),
}
# The nodes of a RabbitMQ cluster reach each other on these ports, and no one else does.
RABBITMQ_CLUSTER_PORTS = ("epmd", "cluster-rpc")
RABBITMQ_DATA = "/var/lib/rabbitmq"
# RabbitMQ's configuration files, where the official image reads them.
RABBITMQ_CONF_D = "/etc/rabbitmq/conf.d/"
RABBITMQ_ADVANCED_CONFIG = "/etc/rabbitmq/advanced.config"
# Variables the official RabbitMQ 4 image's entrypoint refuses to start with (its
# docker-entrypoint.sh, "deprecatedEnvVars").
RABBITMQ_DEPRECATED_VARIABLES = {
    "RABBITMQ_DEFAULT_PASS_FILE", "RABBITMQ_DEFAULT_USER_FILE",
    "RABBITMQ_MANAGEMENT_SSL_CACERTFILE", "RABBITMQ_MANAGEMENT_SSL_CERTFILE",
    "RABBITMQ_MANAGEMENT_SSL_DEPTH", "RABBITMQ_MANAGEMENT_SSL_FAIL_IF_NO_PEER_CERT",
    "RABBITMQ_MANAGEMENT_SSL_KEYFILE", "RABBITMQ_MANAGEMENT_SSL_VERIFY", "RABBITMQ_SSL_CACERTFILE",
    "RABBITMQ_SSL_CERTFILE", "RABBITMQ_SSL_DEPTH", "RABBITMQ_SSL_FAIL_IF_NO_PEER_CERT",
    "RABBITMQ_SSL_KEYFILE", "RABBITMQ_SSL_VERIFY", "RABBITMQ_VM_MEMORY_HIGH_WATERMARK",
}
# The memory alarm is a threshold, not a cap: the node grows past it, so this share of the
# container's limit stays above it.
RABBITMQ_MIN_HEADROOM = 0.25
# RabbitMQ's quorum queue guide: a node needs at least 3 times the WAL size of memory.
RABBITMQ_WAL_FACTOR = 3
MONITORING_NAMESPACE = {"kubernetes.io/metadata.name": "monitoring"}
MONITORED_PORTS = {("api-gateway", "http"), ("inventory-app", "http"), ("billing-app", "http"),
                   ("rabbitmq", "prometheus")}


# --- inputs ----------------------------------------------------------------------------------


@dataclass
class ServiceConfig:
    """What `<binary> config` says a service reads: variable -> default ("" when none)."""

    name: str
    binary: Path
    defaults: dict[str, str]

    @property
    def port_variable(self) -> str:
        return self.name.upper().replace("-", "_") + "_PORT"

    def required(self) -> set[str]:
        return {v for v in self.defaults if not OPTIONAL_VARIABLE.match(v) and v not in ALTERNATIVES}

    def missing(self, env: dict[str, str]) -> set[str]:
        """Required variables `env` leaves unset (or empty); of two alternatives, either will do."""
        given = {k for k, v in env.items() if v != ""}
        missing = self.required() - given
        for name, other in ALTERNATIVES.items():
            if name in self.defaults and name < other and not {name, other} & given:
                missing.add(f"{name} (or {other})")
        return missing

    def validate(self, env: dict[str, str]) -> str | None:
        """None when the service accepts `env`, else its complaint."""
        result = subprocess.run([str(self.binary), "config"], env=env, capture_output=True,
                                text=True, timeout=30, check=False)
        if result.returncode == 0:
            return None
        return (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"


def parse_config_output(text: str) -> dict[str, str]:
    """`NAME=value` (set) or `# NAME=default` (unset) lines -> {NAME: default-or-value}."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def load_service_configs(bin_dir: Path) -> dict[str, ServiceConfig]:
    configs = {}
    for app in APPS:
        binary = bin_dir / app
        if not binary.exists():
            raise SystemExit(f"contract: {binary} is missing: run `cargo build --bins` first")
        # An empty environment: every line is a default.
        out = subprocess.run([str(binary), "config"], env={}, capture_output=True, text=True,
                             timeout=30, check=True).stdout
        configs[app] = ServiceConfig(app, binary, parse_config_output(out))
    return configs


def load_routes(repo: Path) -> dict[str, list[str]]:
    """Every path each service's router registers (`.route("...")`), probes included."""
    pattern = re.compile(r'\.route\(\s*"([^"]+)"')
    common = pattern.findall((repo / "common/src/health.rs").read_text())
    routes = {}
    for app in APPS:
        paths = list(common)
        for source in sorted((repo / app / "src").rglob("*.rs")):
            paths += pattern.findall(source.read_text())
        routes[app] = paths
    return routes


def route_matches(route: str, path: str) -> bool:
    """axum's patterns: `{name}` is one segment, `{*rest}` the rest of the path."""
    regex = ""
    for part in re.split(r"(\{\*?[^}]+\})", route):
        if part.startswith("{*"):
            regex += ".+"
        elif part.startswith("{"):
            regex += "[^/]+"
        else:
            regex += re.escape(part)
    return re.fullmatch(regex, path.rstrip("/") or "/") is not None


_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>(?:[^{}$]|\$\{[^{}]*\}|\$)*))?\})"
)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err},
    ${VAR?err}, ${VAR:+alt}, ${VAR+alt}, and $$ for a literal $. A default may itself hold
    one level of ${...}."""

    def substitute(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("bare") or match.group("name")
        op, arg = match.group("op"), match.group("arg") or ""
        is_set = name in env
        present = is_set and env[name] != ""
        if op in (":-", "-"):
            return env[name] if (present if op == ":-" else is_set) else interpolate(arg, env)
        if op in (":?", "?"):
            if present if op == ":?" else is_set:
                return env[name]
            raise ValueError(f"required variable {name} is not set: {arg}")
        if op in (":+", "+"):
            return interpolate(arg, env) if (present if op == ":+" else is_set) else ""
        return env.get(name, "")

    return _INTERPOLATION.sub(substitute, value)


def interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose(path: Path, env: dict[str, str] | None = None) -> dict:
    """docker-compose.yml with its anchors merged and its variables interpolated from `env`
    (default: nothing set, as on a fresh clone without .env)."""
    return interpolate_tree(yaml.safe_load(path.read_text()), env or {})


def compose_environment(service: dict, base: Path) -> dict[str, str]:
    """A Compose service's environment: env_file entries, then `environment` (list or map).
    A name without a value takes the caller's environment: unset here."""
    result: dict[str, str] = {}
    env_files = service.get("env_file") or []
    for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files:
        path = entry if isinstance(entry, str) else entry.get("path")
        required = True if isinstance(entry, str) else entry.get("required", True)
        file = base / path
        if not file.exists():
            if required:
                raise ValueError(f"env_file {file} is missing")
            continue
        for line in file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                result[key.strip()] = value.strip().strip("'\"")
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        for item in environment:
            key, sep, value = str(item).partition("=")
            if sep:
                result[key] = value
            else:
                result.pop(key, None)
    else:
        for key, value in environment.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return result


def load_rendered(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def workspace_version(repo: Path) -> str:
    text = (repo / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


# --- the Kubernetes side ---------------------------------------------------------------------


@dataclass
class Pod:
    """A workload's pod template, with what the checks look up."""

    workload: dict

    @property
    def kind(self) -> str:
        return self.workload["kind"]

    @property
    def name(self) -> str:
        return self.workload["metadata"]["name"]

    @property
    def template(self) -> dict:
        spec = self.workload["spec"]
        if self.kind == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        return spec["template"]

    @property
    def spec(self) -> dict:
        return self.template["spec"]

    @property
    def labels(self) -> dict:
        return self.template["metadata"].get("labels", {})

    @property
    def is_job(self) -> bool:
        return self.kind == "CronJob"

    @property
    def containers(self) -> list[dict]:
        return self.spec.get("containers", [])

    def port(self, port) -> int | None:
        """A container port of this pod, by name or number."""
        for container in self.containers:
            for entry in container.get("ports", []):
                if port in (entry.get("name"), entry["containerPort"]):
                    return entry["containerPort"]
        return None


@dataclass
class Cluster:
    docs: list[dict]
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)

    def __post_init__(self):
        for doc in self.docs:
            self.objects[(doc["kind"], doc["metadata"]["name"])] = doc

    def get(self, kind: str, name: str) -> dict | None:
        return self.objects.get((kind, name))

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def pods(self) -> list[Pod]:
        return [Pod(doc) for doc in self.docs if doc["kind"] in WORKLOADS]

    def pod(self, name: str) -> Pod | None:
        return next((p for p in self.pods() if p.name == name), None)

    def selected(self, selector: dict | None) -> list[Pod]:
        """Pod templates a label selector (matchLabels / plain map) picks."""
        if selector is None:
            return []
        # Workloads and policies use matchLabels; a Service's selector is the plain map.
        structured = "matchLabels" in selector or "matchExpressions" in selector
        labels = selector.get("matchLabels", {}) if structured else selector
        return [p for p in self.pods() if all(p.labels.get(k) == v for k, v in labels.items())]

    def resolve(self, container: dict) -> tuple[dict[str, str], list[str]]:
        """A container's environment with ConfigMap and Secret references resolved, and the
        references that point at nothing."""
        env, broken = {}, []
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    data = self._data(kind, source[key]["name"])
                    if data is None:
                        broken.append(f"envFrom: {kind} {source[key]['name']} does not exist")
                    else:
                        env.update(data)
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            ref_source = var.get("valueFrom", {})
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                ref = ref_source.get(key)
                if not ref:
                    continue
                data = self._data(kind, ref["name"])
                if data is None:
                    broken.append(f"{var['name']}: {kind} {ref['name']} does not exist")
                elif ref["key"] not in data:
                    broken.append(f"{var['name']}: {kind} {ref['name']} has no key {ref['key']}")
                else:
                    env[var["name"]] = data[ref["key"]]
        return env, broken

    def _data(self, kind: str, name: str) -> dict[str, str] | None:
        doc = self.get(kind, name)
        if doc is None:
            return None
        data = dict(doc.get("data") or {})
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            data.update(doc.get("stringData") or {})
        return {k: str(v) for k, v in data.items()}


def env_source(container: dict, name: str):
    """Where a container's variable comes from: ("value", v) or (kind, object, key)."""
    for var in container.get("env", []):
        if var["name"] == name:
            if "value" in var:
                return ("value", var["value"])
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in var.get("valueFrom", {}):
                    ref = var["valueFrom"][key]
                    return (kind, ref["name"], ref["key"])
    return None


def endpoint_variables(env: dict[str, str]) -> Iterable[tuple[str, str, int]]:
    """(variables, host, port) for each *_HOST with its *_PORT, and each *_URL."""
    for name, value in sorted(env.items()):
        if name.endswith("_HOST"):
            port_name = name[: -len("_HOST")] + "_PORT"
            port = env.get(port_name)
            if port and port.isdigit():
                yield f"{name}/{port_name}", value, int(port)
        elif name.endswith("_URL"):
            url = urlsplit(value)
            if url.hostname:
                yield name, url.hostname, url.port or (443 if url.scheme == "https" else 80)


# --- checks ----------------------------------------------------------------------------------
# Each takes the inputs and returns a list of problems (empty: the check passes).


@dataclass
class Inputs:
    cluster: Cluster
    compose: dict
    configs: dict[str, ServiceConfig]
    routes: dict[str, list[str]]
    version: str
    repo: Path = REPO

    def copy(self) -> "Inputs":
        return Inputs(Cluster(copy.deepcopy(self.cluster.docs)), copy.deepcopy(self.compose),
                      self.configs, self.routes, self.version, self.repo)


def check_names(i: Inputs) -> list[str]:
    c, problems = i.cluster, []
    if c.get("Namespace", NAMESPACE) is None:
        problems.append(f"no Namespace {NAMESPACE}")
    for doc in c.docs:
        if doc["kind"] != "Namespace" and doc["metadata"].get("namespace") != NAMESPACE:
            problems.append(f"{doc['kind']} {doc['metadata']['name']} is not in namespace {NAMESPACE}")
    for name, kind in WORKLOAD_KINDS.items():
        if c.get(kind, name) is None:
            problems.append(f"no {kind} {name}")
        if c.get("Service", name) is None:
            problems.append(f"no Service {name}")
    gateway = c.get("Service", "api-gateway")
    if gateway:
        ports = gateway["spec"].get("ports", [])
        if gateway["spec"].get("type") != "NodePort" or not any(p.get("nodePort") == 30000 for p in ports):
            problems.append("Service api-gateway is not a NodePort on 30000")
    for pod in c.pods():
        missing = [k for k in POD_LABELS if k not in pod.labels]
        if missing or pod.labels.get("app") != pod.name or \
                pod.labels.get("app.kubernetes.io/name") != pod.name or \
                pod.labels.get("app.kubernetes.io/part-of") != "microservices":
            problems.append(f"{pod.name}: pod labels must be app={pod.name}, "
                            f"app.kubernetes.io/name={pod.name}, app.kubernetes.io/part-of=microservices")
    return problems


def check_images(i: Inputs) -> list[str]:
    problems = []
    expected = {app: f"{app}:{i.version}" for app in APPS} | UPSTREAM_IMAGES
    for pod in i.cluster.pods():
        for container in pod.containers + pod.spec.get("initContainers", []):
            image = container.get("image", "")
            if pod.name in expected and image != expected[pod.name]:
                problems.append(f"{pod.name}: image {image!r}, expected {expected[pod.name]!r}")
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.append(f"{pod.name}: image {image!r} has no fixed tag")
            if container.get("imagePullPolicy") != "IfNotPresent":
                problems.append(f"{pod.name}: imagePullPolicy must be IfNotPresent "
                                "(images may be imported into the nodes with no registry)")
    for name, service in (i.compose.get("services") or {}).items():
        image = service.get("image", "")
        if name in expected and image != expected[name]:
            problems.append(f"compose {name}: image {image!r}, expected {expected[name]!r}")
    return problems


def check_references(i: Inputs) -> list[str]:
    """Secret and ConfigMap names and keys that every workload refers to exist."""
    problems = []
    for pod in i.cluster.pods():
        for container in pod.containers:
            _, broken = i.cluster.resolve(container)
            problems += [f"{pod.name}/{container['name']}: {b}" for b in broken]
        for volume in pod.spec.get("volumes", []):
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if key in volume:
                    name = volume[key].get("name") or volume[key].get("secretName")
                    if i.cluster.get(kind, name) is None:
                        problems.append(f"{pod.name}: volume {volume['name']}: {kind} {name} does not exist")
        for volume in pod.spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and i.cluster.get("PersistentVolumeClaim", claim) is None:
                problems.append(f"{pod.name}: volume {volume['name']}: PersistentVolumeClaim {claim} does not exist")
        claims = {t["metadata"]["name"] for t in pod.workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod.spec.get("volumes", [])} | claims
        for container in pod.containers:
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{pod.name}: volumeMount {mount['name']} has no volume")
    return problems


def _service_env_problems(where: str, config: ServiceConfig, env: dict[str, str]) -> list[str]:
    problems = []
    for name in sorted(config.missing(env)):
        problems.append(f"{where}: {name} is required by {config.name} but not set")
    for name in sorted(set(env) - set(config.defaults)):
        problems.append(f"{where}: {name} is set but {config.name} does not read it")
    complaint = config.validate(env)
    if complaint:
        problems.append(f"{where}: {config.name} refuses this configuration: {complaint}")
    return problems


def check_service_variables_k8s(i: Inputs) -> list[str]:
    """Every variable a service requires is set, each is one it reads, and it accepts them."""
    problems = []
    for app, config in i.configs.items():
        pod = i.cluster.pod(app)
        if pod is None:
            continue
        env, _ = i.cluster.resolve(pod.containers[0])
        problems += _service_env_problems(f"k8s {app}", config, env)
    return problems


def check_service_variables_compose(i: Inputs) -> list[str]:
    problems = []
    services = i.compose.get("services") or {}
    for app, config in i.configs.items():
        if app not in services:
            problems.append(f"compose: no service {app}")
            continue
        env = compose_environment(services[app], i.repo)
        problems += _service_env_problems(f"compose {app}", config, env)
    return problems


def check_ports_and_dns_k8s(i: Inputs) -> list[str]:
    """Each app listens where its Service sends traffic, and every host/port or URL it is
    given is a Service of the namespace with that port, leading to a port its pods open."""
    problems, c = [], i.cluster
    for app, config in i.configs.items():
        pod = c.pod(app)
        if pod is None:
            continue
        env, _ = c.resolve(pod.containers[0])
        listen = int(env.get(config.port_variable) or config.defaults[config.port_variable])
        if pod.port("http") != listen:
            problems.append(f"{app}: listens on {listen} ({config.port_variable}) but its "
                            f"container port 'http' is {pod.port('http')}")
        for variable, host, port in endpoint_variables(env):
            service = c.get("Service", host)
            if service is None:
                problems.append(f"{app}: {variable} names {host!r}, which is no Service")
                continue
            entry = next((p for p in service["spec"].get("ports", []) if p["port"] == port), None)
            if entry is None:
                problems.append(f"{app}: {variable} uses port {port}, which Service {host} does not expose")
                continue
            target = entry.get("targetPort", port)
            if not any(p.port(target) for p in c.selected(service["spec"].get("selector"))):
                problems.append(f"{app}: Service {host} port {port} leads to no pod port {target!r}")
    for service in c.of_kind("Service"):
        name = service["metadata"]["name"]
        pods = c.selected(service["spec"].get("selector"))
        if not pods:
            problems.append(f"Service {name}: its selector selects no pod")
        for entry in service["spec"].get("ports", []):
            target = entry.get("targetPort", entry["port"])
            for pod in pods:
                if pod.port(target) is None:
                    problems.append(f"Service {name}: targetPort {target!r} is not a port of {pod.name}")
    return problems


def rabbitmq_nodes(value: str, default_port: int) -> list[tuple[str, int]] | None:
    """RABBITMQ_HOSTS as the services read it: comma-separated host or host:port."""
    nodes = []
    for entry in value.split(","):
        host, sep, port = entry.strip().rpartition(":")
        if not sep:
            host, port = entry.strip(), str(default_port)
        if not host or not port.isdigit():
            return None
        nodes.append((host, int(port)))
    return nodes


def pod_dns_name(c: Cluster, host: str) -> tuple[dict, Pod, int] | None:
    """`<statefulset>-<ordinal>.<governing service>` -> (that Service, the pod template, the
    ordinal), when the StatefulSet has a pod of that ordinal."""
    match = re.fullmatch(r"(?P<sts>[a-z0-9-]+)-(?P<ordinal>[0-9]+)\.(?P<svc>[a-z0-9-]+)", host)
    if not match:
        return None
    sts = c.get("StatefulSet", match.group("sts"))
    service = c.get("Service", match.group("svc"))
    ordinal = int(match.group("ordinal"))
    if sts is None or service is None or sts["spec"].get("serviceName") != match.group("svc") or \
            ordinal >= sts["spec"].get("replicas", 1):
        return None
    return service, Pod(sts), ordinal


def check_broker_nodes_k8s(i: Inputs) -> list[str]:
    """RABBITMQ_HOSTS names pods that exist, by their stable DNS names under the StatefulSet's
    headless Service, on a port of that Service leading to the AMQP port."""
    problems, c = [], i.cluster
    for app in ("api-gateway", "billing-app"):
        pod = c.pod(app)
        if pod is None:
            continue
        env, _ = c.resolve(pod.containers[0])
        if "RABBITMQ_HOSTS" not in env:
            continue
        if "RABBITMQ_HOST" in env:
            problems.append(f"{app}: RABBITMQ_HOST is set beside RABBITMQ_HOSTS, which the service reads instead")
        port = int(env.get("RABBITMQ_PORT") or i.configs[app].defaults.get("RABBITMQ_PORT") or 5672)
        nodes = rabbitmq_nodes(env["RABBITMQ_HOSTS"], port)
        if not nodes:
            problems.append(f"{app}: RABBITMQ_HOSTS={env['RABBITMQ_HOSTS']!r} is not a list of host[:port]")
            continue
        for host, node_port in nodes:
            found = pod_dns_name(c, host)
            if found is None:
                problems.append(f"{app}: RABBITMQ_HOSTS names {host!r}, which is no pod's DNS name "
                                "(<statefulset>-<ordinal>.<its headless Service>)")
                continue
            service, server, _ = found
            entry = next((p for p in service["spec"].get("ports", []) if p["port"] == node_port), None)
            if entry is None or server.port(entry.get("targetPort", node_port)) != SERVER_PORTS["rabbitmq"]:
                problems.append(f"{app}: RABBITMQ_HOSTS {host}:{node_port} does not lead to the AMQP port")
        rabbit = c.pod("rabbitmq")
        if rabbit is not None:
            replicas = rabbit.workload["spec"].get("replicas", 1)
            wanted = {f"rabbitmq-{n}.{rabbit.workload['spec'].get('serviceName')}" for n in range(replicas)}
            if {h for h, _ in nodes} != wanted:
                problems.append(f"{app}: RABBITMQ_HOSTS should list every node, {sorted(wanted)}; "
                                f"it lists {sorted(h for h, _ in nodes)}")
    return problems


def _raw_env(container: dict, name: str) -> dict | None:
    return next((v for v in container.get("env", []) if v["name"] == name), None)


def check_rabbitmq_cluster(i: Inputs) -> list[str]:
    """With more than one RabbitMQ replica: one cluster by peer discovery (plugin enabled and
    configured, stable long node names, a shared Erlang cookie from a Secret), nodes that find
    each other while booting, a disruption budget that keeps a majority, spread over the nodes,
    every client given every node, and no Kubernetes API access granted or mounted."""
    c, problems = i.cluster, []
    pod = c.pod("rabbitmq")
    if pod is None:
        return problems
    spec = pod.workload["spec"]
    replicas = spec.get("replicas", 1)
    if replicas == 1:
        for app in ("api-gateway", "billing-app"):
            client = c.pod(app)
            if client and "RABBITMQ_HOSTS" in c.resolve(client.containers[0])[0]:
                pass  # a one-node list is fine; check_broker_nodes_k8s holds it to the pods
        return problems
    if replicas % 2 == 0:
        problems.append(f"rabbitmq: {replicas} replicas; an even number tolerates no more failures than one fewer")
    quorum = replicas // 2 + 1
    if spec.get("podManagementPolicy") != "Parallel":
        problems.append("rabbitmq: podManagementPolicy must be Parallel: after a whole-cluster stop "
                        "each node waits for its peers before it becomes ready")
    service = c.get("Service", spec.get("serviceName", ""))
    if service is not None:
        if service["spec"].get("publishNotReadyAddresses") is not True:
            problems.append(f"Service {service['metadata']['name']}: publishNotReadyAddresses must be true, "
                            "or booting nodes cannot resolve each other")
        names = {p.get("name") for p in service["spec"].get("ports", [])}
        for port in RABBITMQ_CLUSTER_PORTS:
            if port not in names:
                problems.append(f"Service {service['metadata']['name']}: no port {port}")
    container = pod.containers[0]
    env, _ = c.resolve(container)
    svc = spec.get("serviceName")
    if env.get("RABBITMQ_USE_LONGNAME") != "true" or \
            env.get("RABBITMQ_NODENAME") != f"rabbit@$(MY_POD_NAME).{svc}.$(MY_POD_NAMESPACE)":
        problems.append(f"rabbitmq: node names must be the pods' DNS names: RABBITMQ_USE_LONGNAME=true, "
                        f"RABBITMQ_NODENAME=rabbit@$(MY_POD_NAME).{svc}.$(MY_POD_NAMESPACE)")
    for name, field_path in (("MY_POD_NAME", "metadata.name"), ("MY_POD_NAMESPACE", "metadata.namespace")):
        var = _raw_env(container, name)
        if not var or var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != field_path:
            problems.append(f"rabbitmq: {name} must come from the pod's {field_path}")
    # Configuration files and the enabled plugins file, from ConfigMaps.
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}

    def mounted(path: str) -> str | None:
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] == path:
                config_map = volumes.get(mount["name"], {}).get("configMap")
                data = c._data("ConfigMap", config_map["name"]) if config_map else None
                return (data or {}).get(mount.get("subPath", ""))
        return None

    conf: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"].startswith(RABBITMQ_CONF_D):
            conf.update(parse_rabbitmq_conf(mounted(mount["mountPath"]) or ""))
    if conf.get("cluster_formation.peer_discovery_backend") not in ("rabbit_peer_discovery_k8s", "k8s", "kubernetes"):
        problems.append("rabbitmq: cluster_formation.peer_discovery_backend must be rabbit_peer_discovery_k8s")
    if "rabbitmq_peer_discovery_k8s" not in (mounted("/etc/rabbitmq/enabled_plugins") or ""):
        problems.append("rabbitmq: /etc/rabbitmq/enabled_plugins must enable rabbitmq_peer_discovery_k8s "
                        "(and keep rabbitmq_management and rabbitmq_prometheus)")
    else:
        plugins = mounted("/etc/rabbitmq/enabled_plugins") or ""
        for plugin in ("rabbitmq_management", "rabbitmq_prometheus"):
            if plugin not in plugins:
                problems.append(f"rabbitmq: /etc/rabbitmq/enabled_plugins drops the image's {plugin}")
    if conf.get("quorum_queue.continuous_membership_reconciliation.enabled") != "true" or \
            conf.get("quorum_queue.continuous_membership_reconciliation.target_group_size") != str(min(replicas, 3)):
        problems.append("rabbitmq: quorum queues declared before every node joined keep fewer members: "
                        "enable quorum_queue.continuous_membership_reconciliation with target_group_size "
                        f"{min(replicas, 3)}")
    # The shared Erlang cookie: copied from a Secret onto the volume by an init container.
    cookie_ok = False
    for init in pod.spec.get("initContainers", []):
        mounts = {m["name"]: m["mountPath"] for m in init.get("volumeMounts", [])}
        secrets = [volumes[n]["secret"] for n in mounts if "secret" in volumes.get(n, {})]
        command = " ".join(init.get("command", []) + init.get("args", []))
        if secrets and mounts.get("data") == RABBITMQ_DATA and f"{RABBITMQ_DATA}/.erlang.cookie" in command:
            for secret in secrets:
                data = c._data("Secret", secret["secretName"])
                keys = [item["key"] for item in secret.get("items", [])] or list(data or {})
                if data is None or not keys or any(k not in data for k in keys):
                    problems.append(f"rabbitmq: the cookie Secret {secret['secretName']} or its key is missing")
                else:
                    cookie_ok = True
    if not cookie_ok:
        problems.append(f"rabbitmq: every node needs the same Erlang cookie: an init container copying it "
                        f"from a Secret to {RABBITMQ_DATA}/.erlang.cookie")
    # A disruption budget that keeps a majority.
    budgets = [b for b in c.of_kind("PodDisruptionBudget") if pod in c.selected(b["spec"].get("selector"))]
    if not budgets:
        problems.append("rabbitmq: no PodDisruptionBudget: a drain could stop a majority of the nodes")
    for budget in budgets:
        max_unavailable, min_available = budget["spec"].get("maxUnavailable"), budget["spec"].get("minAvailable")
        if not ((isinstance(max_unavailable, int) and max_unavailable <= replicas - quorum) or
                (isinstance(min_available, int) and min_available >= quorum)):
            problems.append(f"PodDisruptionBudget {budget['metadata']['name']}: must keep {quorum} of "
                            f"{replicas} nodes (maxUnavailable {replicas - quorum} or minAvailable {quorum})")
    # Spread over the cluster's nodes, without refusing to run on fewer.
    anti = pod.spec.get("affinity", {}).get("podAntiAffinity", {})
    preferred = [t.get("podAffinityTerm", {}) for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    if anti.get("requiredDuringSchedulingIgnoredDuringExecution"):
        problems.append("rabbitmq: required anti-affinity leaves nodes unscheduled on a cluster of fewer nodes")
    if not any(t.get("topologyKey") == "kubernetes.io/hostname" and
               t.get("labelSelector", {}).get("matchLabels", {}).get("app") == "rabbitmq" for t in preferred):
        problems.append("rabbitmq: no preferred pod anti-affinity on kubernetes.io/hostname")
    # RabbitMQ 4.1+'s peer discovery queries no Kubernetes API: nothing to grant, no token.
    for binding in c.of_kind("RoleBinding") + c.of_kind("ClusterRoleBinding"):
        problems.append(f"{binding['kind']} {binding['metadata']['name']}: nothing in the system needs the "
                        "Kubernetes API (RabbitMQ's peer discovery does not query it)")
    if pod.spec.get("automountServiceAccountToken") is not False:
        problems.append("rabbitmq: automountServiceAccountToken must stay false")
    return problems


def check_ingress(i: Inputs) -> list[str]:
    """An Ingress (components/ingress) routes its documented host, over TLS, to a Service port
    that leads to the gateway's listening port; its TLS Secret is the documented one."""
    c, problems = i.cluster, []
    for ingress in c.of_kind("Ingress"):
        name, spec = ingress["metadata"]["name"], ingress["spec"]
        hosts = [rule.get("host") for rule in spec.get("rules", [])]
        if hosts != [INGRESS_HOST]:
            problems.append(f"Ingress {name}: routes hosts {hosts}, expected [{INGRESS_HOST!r}]")
        tls = spec.get("tls", [])
        if not any(INGRESS_HOST in t.get("hosts", []) and t.get("secretName") == INGRESS_TLS_SECRET for t in tls):
            problems.append(f"Ingress {name}: no TLS for {INGRESS_HOST} with Secret {INGRESS_TLS_SECRET}")
        secret = c.get("Secret", INGRESS_TLS_SECRET)
        if secret is not None and (secret.get("type") != "kubernetes.io/tls" or
                                   {"tls.crt", "tls.key"} - set(c._data("Secret", INGRESS_TLS_SECRET) or {})):
            problems.append(f"Secret {INGRESS_TLS_SECRET}: must be of type kubernetes.io/tls with tls.crt and tls.key")
        for rule in spec.get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path.get("backend", {}).get("service", {})
                service = c.get("Service", backend.get("name", ""))
                if service is None:
                    problems.append(f"Ingress {name}: backend Service {backend.get('name')!r} does not exist")
                    continue
                wanted = backend.get("port", {})
                entry = next((p for p in service["spec"].get("ports", [])
                              if p.get("name") == wanted.get("name") or p["port"] == wanted.get("number")), None)
                if entry is None:
                    problems.append(f"Ingress {name}: Service {service['metadata']['name']} has no port {wanted}")
                    continue
                pods = c.selected(service["spec"].get("selector"))
                target = entry.get("targetPort", entry["port"])
                if not any(p.name == "api-gateway" and p.port(target) == p.port("http") for p in pods):
                    problems.append(f"Ingress {name}: Service {service['metadata']['name']} port {wanted} does "
                                    "not lead to the gateway's HTTP port")
                if path.get("path") != "/" or path.get("pathType") != "Prefix":
                    problems.append(f"Ingress {name}: expected path / (Prefix), every API path is the gateway's")
    return problems


def check_backups(i: Inputs) -> list[str]:
    """A CronJob per database dumps it (pg_dump custom format) from its Service into a volume of
    its own, one run at a time, keeping a bounded number of dumps."""
    c, problems = i.cluster, []
    for backup, database in BACKUPS.items():
        pod = c.pod(backup)
        if pod is None or pod.kind != "CronJob":
            problems.append(f"no CronJob {backup}")
            continue
        spec = pod.workload["spec"]
        if not spec.get("schedule") or spec.get("concurrencyPolicy") != "Forbid":
            problems.append(f"CronJob {backup}: needs a schedule and concurrencyPolicy Forbid")
        container = pod.containers[0]
        env, _ = c.resolve(container)
        if env.get("PGHOST") != database or env.get("PGDATABASE") != DATABASES[database]:
            problems.append(f"CronJob {backup}: PGHOST and PGDATABASE must be {database} and {DATABASES[database]}")
        script = " ".join(container.get("command", []) + container.get("args", []))
        if "--format=custom" not in script and "-Fc" not in script:
            problems.append(f"CronJob {backup}: dumps must be pg_dump's custom format (-Fc), as Compose's")
        if not env.get("BACKUP_KEEP", "").isdigit() or int(env["BACKUP_KEEP"]) < 1:
            problems.append(f"CronJob {backup}: BACKUP_KEEP must bound the number of dumps kept")
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == BACKUP_VOLUME_PATH), None)
        claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim") if mount else None
        if not claim:
            problems.append(f"CronJob {backup}: {BACKUP_VOLUME_PATH} must be a PersistentVolumeClaim")
    return problems


def _compose_listen_port(name: str, service: dict, configs: dict[str, ServiceConfig], base: Path) -> int | None:
    if name in configs:
        config = configs[name]
        env = compose_environment(service, base)
        return int(env.get(config.port_variable) or config.defaults[config.port_variable])
    return SERVER_PORTS.get(name)


# Compose's entry: the reverse proxy in front of the gateways (TLS, balancing), publishing the
# gateway's port on the host for them; its configuration names every gateway it balances over.
COMPOSE_ENTRY = "entry"
COMPOSE_ENTRY_CONFIG = "entry/Caddyfile"


def _published(service: dict) -> list[tuple[str, str]]:
    """(published, target) ports of a Compose service, short or long syntax."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((str(p.get("published", "")), str(p.get("target", ""))))
        else:
            parts = str(p).split("/")[0].rsplit(":", 2)
            out.append((parts[-2] if len(parts) > 1 else "", parts[-1]))
    return out


def check_ports_and_dns_compose(i: Inputs) -> list[str]:
    problems = []
    services = i.compose.get("services") or {}
    images = {f"{app}:{i.version}": app for app in APPS}
    # More instances of a service (the gateways behind the entry) run its image under
    # another name; the entry fronts them.
    replicas = {name: images[str(svc.get("image"))] for name, svc in services.items()
                if name not in COMPONENTS and str(svc.get("image")) in images}
    if set(services) != set(COMPONENTS):
        missing, extra = set(COMPONENTS) - set(services), set(services) - set(COMPONENTS)
        # Optional profiles (e.g. monitoring) may add services; none of ours may be missing.
        extra = {s for s in extra if not services[s].get("profiles")} - set(replicas) - {COMPOSE_ENTRY}
        if missing or extra:
            problems.append(f"compose services differ from {sorted(COMPONENTS)}: "
                            f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    for app in APPS:
        if app not in services:
            continue
        env = compose_environment(services[app], i.repo)
        for variable, host, port in endpoint_variables(env):
            if host not in services:
                problems.append(f"compose {app}: {variable} names {host!r}, which is no service")
                continue
            listen = _compose_listen_port(host, services[host], i.configs, i.repo)
            if listen != port:
                problems.append(f"compose {app}: {variable} uses port {port}, but {host} listens on {listen}")
    gateway = services.get("api-gateway", {})
    listen = _compose_listen_port("api-gateway", gateway, i.configs, i.repo)
    gateways = ["api-gateway"] + sorted(n for n, app in replicas.items() if app == "api-gateway")
    for name in gateways:
        if services.get(name, {}).get("ports"):
            problems.append(f"compose {name}: publishes {services[name]['ports']}: clients reach "
                            f"the gateways through {COMPOSE_ENTRY} only")
    entry = services.get(COMPOSE_ENTRY)
    if entry is None:
        problems.append(f"compose: no service {COMPOSE_ENTRY} publishes the gateway's port {listen}")
    else:
        if (str(listen), str(listen)) not in _published(entry):
            problems.append(f"compose {COMPOSE_ENTRY}: publishes {_published(entry)}, not the "
                            f"gateway's port {listen} on {listen}")
        config = (i.repo / COMPOSE_ENTRY_CONFIG).read_text() if (i.repo / COMPOSE_ENTRY_CONFIG).is_file() else ""
        for name in gateways:
            if not re.search(rf"(?<![\w.-]){re.escape(name)}:{listen}(?![\w.-])", config):
                problems.append(f"{COMPOSE_ENTRY_CONFIG}: does not balance over {name}:{listen}")
    return problems


def check_probes(i: Inputs) -> list[str]:
    """Probes exist, HTTP probes use paths the service's router serves on its own port, and
    liveness never depends on other services."""
    problems = []
    for pod in i.cluster.pods():
        if pod.is_job:
            continue  # a Job's pod runs to completion: nothing to probe
        for container in pod.containers:
            where = f"{pod.name}/{container['name']}"
            for kind in ("readinessProbe", "livenessProbe"):
                if kind not in container:
                    problems.append(f"{where}: no {kind}")
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if not probe:
                    continue
                http = probe.get("httpGet")
                socket = probe.get("tcpSocket")
                if http:
                    if pod.name not in i.routes:
                        problems.append(f"{where}: {kind} is HTTP but {pod.name} has no known router")
                    elif not any(route_matches(r, http["path"]) for r in i.routes[pod.name]):
                        problems.append(f"{where}: {kind} path {http['path']} is not served by {pod.name}")
                    if pod.port(http["port"]) is None:
                        problems.append(f"{where}: {kind} port {http['port']!r} is not a container port")
                    if kind == "livenessProbe" and http["path"].rstrip("/") == "/ready":
                        problems.append(f"{where}: liveness must not check dependencies (/ready)")
                if socket and pod.port(socket["port"]) is None:
                    problems.append(f"{where}: {kind} port {socket['port']!r} is not a container port")
                if pod.name in APPS and not http:
                    problems.append(f"{where}: {kind} should be an httpGet probe")
                if pod.name in DATABASES and "pg_isready" not in str(probe.get("exec", {}).get("command")):
                    problems.append(f"{where}: {kind} should run pg_isready")
        if pod.name in APPS:
            container = pod.containers[0]
            paths = {k: container.get(k, {}).get("httpGet", {}).get("path") for k in
                     ("startupProbe", "readinessProbe", "livenessProbe")}
            # The gateway stays in its Service while the broker is down (it answers orders 503
            # and keeps serving movies); the others are useless without their dependencies.
            readiness = "/health" if pod.name == "api-gateway" else "/ready"
            expected = {"startupProbe": "/health", "readinessProbe": readiness, "livenessProbe": "/health"}
            if paths != expected:
                problems.append(f"{pod.name}: probes should be {expected}; found {paths}")
    return problems


def check_statefulsets(i: Inputs) -> list[str]:
    problems = []
    for sts in i.cluster.of_kind("StatefulSet"):
        name, service_name = sts["metadata"]["name"], sts["spec"].get("serviceName")
        service = i.cluster.get("Service", service_name) if service_name else None
        if service is None:
            problems.append(f"StatefulSet {name}: serviceName {service_name!r} is no Service")
            continue
        if service["spec"].get("clusterIP") != "None":
            problems.append(f"StatefulSet {name}: Service {service_name} is not headless (clusterIP: None)")
        if Pod(sts) not in i.cluster.selected(service["spec"].get("selector")):
            problems.append(f"StatefulSet {name}: Service {service_name} does not select its pods")
    return problems


def check_autoscalers(i: Inputs) -> list[str]:
    problems = []
    hpas = {h["metadata"]["name"]: h for h in i.cluster.of_kind("HorizontalPodAutoscaler")}
    for expected in ("api-gateway", "inventory-app"):
        if expected not in hpas:
            problems.append(f"no HorizontalPodAutoscaler for {expected}")
    for name, hpa in hpas.items():
        spec = hpa["spec"]
        ref = spec["scaleTargetRef"]
        target = i.cluster.get(ref["kind"], ref["name"])
        if target is None:
            problems.append(f"HPA {name}: target {ref['kind']} {ref['name']} does not exist")
            continue
        if "replicas" in target["spec"]:
            problems.append(f"HPA {name}: {ref['kind']} {ref['name']} sets replicas, which the HPA owns")
        for container in Pod(target).containers:
            if not container.get("resources", {}).get("requests", {}).get("cpu"):
                problems.append(f"HPA {name}: container {container['name']} has no CPU request")
        cpu = [m for m in spec.get("metrics", []) if m.get("type") == "Resource"
               and m["resource"]["name"] == "cpu"]
        if (spec.get("minReplicas"), spec.get("maxReplicas")) != (1, 3) or not cpu or \
                cpu[0]["resource"]["target"].get("averageUtilization") != 60:
            problems.append(f"HPA {name}: expected min 1, max 3, 60% CPU")
    return problems


def _peer_matches(peer: dict, pod_labels: dict | None, namespace_labels: dict) -> bool:
    """Does a NetworkPolicy peer match a source/destination (pod labels None: any pod)."""
    if "ipBlock" in peer:
        return False
    ns_selector, pod_selector = peer.get("namespaceSelector"), peer.get("podSelector")

    def matches(selector: dict | None, labels: dict | None) -> bool:
        wanted = (selector or {}).get("matchLabels", {})
        return labels is not None and all(labels.get(k) == v for k, v in wanted.items())

    if ns_selector is None:
        in_namespace = namespace_labels.get("kubernetes.io/metadata.name") == NAMESPACE
    else:
        in_namespace = matches(ns_selector, namespace_labels)
    if not in_namespace:
        return False
    return pod_selector is None or (pod_labels is not None and matches(pod_selector, pod_labels))


def _port_matches(rule_ports: list[dict] | None, pod: Pod | None, port_name: str) -> bool:
    if not rule_ports:
        return True
    number = pod.port(port_name) if pod else None
    return any(p.get("port") in (port_name, number) for p in rule_ports)


def flow_allowed(c: Cluster, source: Pod | None, source_ns: dict, destination: Pod, port: str) -> bool:
    """Would the namespace's NetworkPolicies let `source` (a pod here, or any pod of the
    namespace labelled `source_ns` when None) open `port` on `destination`?"""
    here = {"kubernetes.io/metadata.name": NAMESPACE}
    policies = c.of_kind("NetworkPolicy")

    def selects(policy: dict, pod: Pod) -> bool:
        wanted = policy["spec"].get("podSelector", {}).get("matchLabels", {})
        return all(pod.labels.get(k) == v for k, v in wanted.items())

    def direction_allowed(kind: str, subject: Pod, peer_labels, peer_ns, peer_pod) -> bool:
        key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
        relevant = [p for p in policies if selects(p, subject) and
                    kind in p["spec"].get("policyTypes", ["Ingress"])]
        if not relevant:
            return True
        for policy in relevant:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                if peers and not any(_peer_matches(peer, peer_labels, peer_ns) for peer in peers):
                    continue
                if _port_matches(rule.get("ports"), destination, port):
                    return True
        return False

    ingress = direction_allowed("Ingress", destination, source.labels if source else None,
                                source_ns, source)
    egress = source is None or direction_allowed("Egress", source, destination.labels, here, destination)
    return ingress and egress


def check_network_policies(i: Inputs) -> list[str]:
    """Selectors select something; named ports exist on the pods they protect or reach."""
    problems, c = [], i.cluster
    for policy in c.of_kind("NetworkPolicy"):
        name = policy["metadata"]["name"]
        selector = policy["spec"].get("podSelector", {})
        subjects = c.pods() if not selector.get("matchLabels") else c.selected(selector)
        if not subjects:
            problems.append(f"NetworkPolicy {name}: podSelector selects no pod")
        for key, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(key) or []:
                # A named port must be open on the pods the traffic goes to: the policy's own
                # pods for ingress, the peers (of this namespace) for egress.
                targets = subjects if key == "ingress" else []
                for peer in rule.get(peers_key) or []:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        selected = c.selected(peer["podSelector"])
                        if not selected:
                            problems.append(f"NetworkPolicy {name}: {peers_key} podSelector "
                                            f"{peer['podSelector']} selects no pod")
                        if key == "egress":
                            targets += selected
                for port in rule.get("ports") or []:
                    if isinstance(port.get("port"), str) and targets and \
                            not any(p.port(port["port"]) for p in targets):
                        problems.append(f"NetworkPolicy {name}: port {port['port']!r} is open on none "
                                        f"of the pods it concerns")
    return problems


def check_network_flows(i: Inputs) -> list[str]:
    """The policies allow exactly the system's flows: the gateway and billing-app alone reach
    RabbitMQ, each app alone reaches its database, Prometheus scrapes the metrics ports."""
    problems, c = [], i.cluster
    here = {"kubernetes.io/metadata.name": NAMESPACE}
    pods = {p.name: p for p in c.pods()}
    parties = COMPONENTS + tuple(b for b in BACKUPS if b in pods)
    for source in parties:
        for destination in parties:
            if source == destination or source not in pods or destination not in pods:
                continue
            for container in pods[destination].containers:
                for entry in container.get("ports", []):
                    port = entry.get("name")
                    allowed = flow_allowed(c, pods[source], here, pods[destination], port)
                    expected = (source, destination, port) in ALLOWED_FLOWS
                    if allowed != expected:
                        problems.append(f"{source} -> {destination}:{port} is "
                                        f"{'allowed' if allowed else 'blocked'}, should be "
                                        f"{'allowed' if expected else 'blocked'}")
    for destination, pod in pods.items():
        for container in pod.containers:
            for entry in container.get("ports", []):
                port = entry.get("name")
                allowed = flow_allowed(c, None, MONITORING_NAMESPACE, pod, port)
                expected = (destination, port) in MONITORED_PORTS
                if allowed != expected:
                    problems.append(f"monitoring namespace -> {destination}:{port} is "
                                    f"{'allowed' if allowed else 'blocked'}, should be "
                                    f"{'allowed' if expected else 'blocked'}")
    outside = {"kubernetes.io/metadata.name": "some-other-namespace"}
    if "api-gateway" in pods and not flow_allowed(c, None, outside, pods["api-gateway"], "http"):
        problems.append("clients from outside cannot reach api-gateway:http")
    if "api-gateway" in pods and c.of_kind("Ingress"):
        for controller in INGRESS_CONTROLLER_NAMESPACES:
            if not flow_allowed(c, None, controller, pods["api-gateway"], "http"):
                problems.append(f"the ingress controller (namespace {controller['kubernetes.io/metadata.name']}) "
                                "cannot reach api-gateway:http")
    # A RabbitMQ cluster's nodes talk to each other; a single node talks to no one.
    rabbit = pods.get("rabbitmq")
    if rabbit is not None:
        clustered = rabbit.workload["spec"].get("replicas", 1) > 1
        for port in RABBITMQ_CLUSTER_PORTS:
            if rabbit.port(port) is None:
                if clustered:
                    problems.append(f"rabbitmq: a cluster's nodes need the container port {port}")
                continue
            if flow_allowed(c, rabbit, here, rabbit, port) != clustered:
                problems.append(f"rabbitmq -> rabbitmq:{port} is "
                                f"{'blocked' if clustered else 'allowed'}, should be "
                                f"{'allowed' if clustered else 'blocked'}")
    return problems


def check_credentials(i: Inputs) -> list[str]:
    """Credentials live in Secrets only; servers and clients use the same Secret keys."""
    problems, c = [], i.cluster
    # Every secret value but user names (which may well appear as words elsewhere).
    secret_values = set()
    for secret in c.of_kind("Secret"):
        data = c._data("Secret", secret["metadata"]["name"]) or {}
        secret_values |= {v for k, v in data.items() if k != "username" and v}

    def strings(node) -> Iterable[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    for doc in c.docs:
        if doc["kind"] != "Secret" and any(v in text for text in strings(doc) for v in secret_values):
            problems.append(f"{doc['kind']} {doc['metadata']['name']} contains a credential")
    for pod in c.pods():
        for container in pod.containers:
            for var in container.get("env", []):
                if re.search(r"PASS|SECRET|TOKEN", var["name"]) and "value" in var:
                    problems.append(f"{pod.name}: {var['name']} is a literal, not a Secret reference")

    def same(app: str, app_var: str, server: str, server_var: str):
        a, s = c.pod(app), c.pod(server)
        if a and s:
            left, right = env_source(a.containers[0], app_var), env_source(s.containers[0], server_var)
            if left is None or left != right:
                problems.append(f"{app} {app_var} ({left}) and {server} {server_var} ({right}) "
                                "must come from the same Secret/ConfigMap key")

    for prefix, database in DB_PREFIXES.items():
        app = "inventory-app" if database == "inventory-db" else "billing-app"
        same(app, f"{prefix}_USER", database, "POSTGRES_USER")
        same(app, f"{prefix}_PASSWORD", database, "POSTGRES_PASSWORD")
        same(app, f"{prefix}_NAME", database, "POSTGRES_DB")
    for backup, database in BACKUPS.items():
        same(backup, "PGUSER", database, "POSTGRES_USER")
        same(backup, "PGPASSWORD", database, "POSTGRES_PASSWORD")
    for app in ("api-gateway", "billing-app"):
        same(app, "RABBITMQ_USER", "rabbitmq", "RABBITMQ_DEFAULT_USER")
        same(app, "RABBITMQ_PASSWORD", "rabbitmq", "RABBITMQ_DEFAULT_PASS")
    # Compose: the services log in with what the servers were created with.
    services = i.compose.get("services") or {}
    pairs = [("inventory-app", "INVENTORY_DB_USER", "inventory-db", "POSTGRES_USER"),
             ("inventory-app", "INVENTORY_DB_PASSWORD", "inventory-db", "POSTGRES_PASSWORD"),
             ("inventory-app", "INVENTORY_DB_NAME", "inventory-db", "POSTGRES_DB"),
             ("billing-app", "BILLING_DB_USER", "billing-db", "POSTGRES_USER"),
             ("billing-app", "BILLING_DB_PASSWORD", "billing-db", "POSTGRES_PASSWORD"),
             ("billing-app", "BILLING_DB_NAME", "billing-db", "POSTGRES_DB"),
             ("api-gateway", "RABBITMQ_USER", "rabbitmq", "RABBITMQ_DEFAULT_USER"),
             ("api-gateway", "RABBITMQ_PASSWORD", "rabbitmq", "RABBITMQ_DEFAULT_PASS"),
             ("billing-app", "RABBITMQ_USER", "rabbitmq", "RABBITMQ_DEFAULT_USER"),
             ("billing-app", "RABBITMQ_PASSWORD", "rabbitmq", "RABBITMQ_DEFAULT_PASS")]
    for app, app_var, server, server_var in pairs:
        if app in services and server in services:
            left = compose_environment(services[app], i.repo).get(app_var)
            right = compose_environment(services[server], i.repo).get(server_var)
            if left != right:
                problems.append(f"compose {app} {app_var}={left!r} but {server} {server_var}={right!r}")
    return problems


def check_databases(i: Inputs) -> list[str]:
    """psql in a database pod lands in its database as the application's user; data is on a
    persistent volume."""
    problems, c = [], i.cluster
    for database, db_name in DATABASES.items():
        pod = c.pod(database)
        if pod is None:
            continue
        container = pod.containers[0]
        env, _ = c.resolve(container)
        if env.get("POSTGRES_DB") != db_name or env.get("PGDATABASE") != db_name:
            problems.append(f"{database}: POSTGRES_DB and PGDATABASE must be {db_name!r}")
        if env_source(container, "PGUSER") != env_source(container, "POSTGRES_USER"):
            problems.append(f"{database}: PGUSER must come from where POSTGRES_USER does")
        problems += _persistent(pod, env.get("PGDATA", "/var/lib/postgresql/data"))
        # The root filesystem is read-only: psql keeps its history only where it may write, and
        # across restarts only on the volume.
        history = env.get("PSQL_HISTORY", "")
        if not history.startswith("/") or _persistent(pod, history) or \
                history.startswith(env.get("PGDATA", "/var/lib/postgresql/data").rstrip("/") + "/"):
            problems.append(f"{database}: PSQL_HISTORY must be a file on the data volume, outside "
                            f"PGDATA ({history!r})")
        compose_env = compose_environment((i.compose.get("services") or {}).get(database, {}), i.repo)
        if compose_env.get("POSTGRES_DB") != db_name:
            problems.append(f"compose {database}: POSTGRES_DB must be {db_name!r}")
    rabbit = c.pod("rabbitmq")
    if rabbit:
        problems += _persistent(rabbit, "/var/lib/rabbitmq")
    return problems


def _persistent(pod: Pod, path: str) -> list[str]:
    claims = {t["metadata"]["name"] for t in pod.workload["spec"].get("volumeClaimTemplates", [])}
    mounts = [m for m in pod.containers[0].get("volumeMounts", []) if m["name"] in claims]
    if not any(path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts):
        return [f"{pod.name}: {path} is not on a volumeClaimTemplate volume"]
    return []


def check_pod_hardening(i: Inputs) -> list[str]:
    """Non-root, read-only, no capabilities, no token, bounded resources, graceful stops."""
    problems = []
    for pod in i.cluster.pods():
        spec = pod.spec
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{pod.name}: automountServiceAccountToken must be false")
        pod_sc = spec.get("securityContext", {})
        if pod_sc.get("runAsNonRoot") is not True or \
                pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{pod.name}: pod securityContext needs runAsNonRoot and RuntimeDefault seccomp")
        for container in pod.containers + pod.spec.get("initContainers", []):
            where = f"{pod.name}/{container['name']}"
            sc = container.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True \
                    or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: securityContext must drop ALL capabilities, forbid privilege "
                                "escalation and make the root filesystem read-only")
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if not resources.get(bound, {}).get(resource):
                        problems.append(f"{where}: no {resource} {bound[:-1]}")
        if pod.name in APPS:
            container = pod.containers[0]
            sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            drain = float(i.configs[pod.name].defaults.get("SHUTDOWN_TIMEOUT_SECONDS", "10"))
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if sleep < 3:
                problems.append(f"{pod.name}: needs a preStop sleep so endpoints drop it before SIGTERM")
            if sleep + drain >= grace:
                problems.append(f"{pod.name}: preStop {sleep}s + drain {drain:g}s do not fit in the "
                                f"{grace}s grace period")
    return problems


def check_settings_agree(i: Inputs) -> list[str]:
    """Compose and Kubernetes give the services the same non-secret settings."""
    problems = []
    services = i.compose.get("services") or {}
    for app in APPS:
        pod = i.cluster.pod(app)
        if pod is None or app not in services:
            continue
        k8s, _ = i.cluster.resolve(pod.containers[0])
        compose = compose_environment(services[app], i.repo)
        for name in sorted(set(k8s) & set(compose)):
            if re.search(r"PASS|USER|_HOST$|_URL$|LOG_", name):
                continue  # credentials differ by design; hosts are checked against each side's names
            if k8s[name] != compose[name]:
                problems.append(f"{app}: {name} is {k8s[name]!r} on Kubernetes, {compose[name]!r} in compose")
    return problems


# --- RabbitMQ's limits -----------------------------------------------------------------------

_RABBITMQ_UNITS = {"": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
                   "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20,
                   "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40}


def rabbitmq_bytes(value: str) -> int | None:
    """An information unit as RabbitMQ parses it (rabbit_resource_monitor_misc): K, M, G, MB...
    are decimal, Ki, Mi, MiB... binary, a bare number is bytes. None when it is none."""
    match = re.fullmatch(r"([0-9]+)\s*([a-zA-Z]*)", value.strip())
    if not match or match.group(2).lower() not in _RABBITMQ_UNITS:
        return None
    return int(match.group(1)) * _RABBITMQ_UNITS[match.group(2).lower()]


def kubernetes_bytes(value) -> int | None:
    """A Kubernetes memory quantity (Mi, Gi, M, G, plain bytes)."""
    units = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9]+)([a-zA-Z]*)", str(value).strip())
    if not match or match.group(2) not in units:
        return None
    return int(match.group(1)) * units[match.group(2)]


def compose_bytes(value) -> int | None:
    """A Compose memory size: b, k, m, g (binary, as Docker counts them), plain bytes."""
    match = re.fullmatch(r"([0-9]+)\s*([bkmg]?)b?", str(value).strip().lower())
    if not match:
        return None
    return int(match.group(1)) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)]


def parse_rabbitmq_conf(text: str) -> dict[str, str]:
    """rabbitmq.conf's `key = value` lines (comments and blank lines skipped)."""
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def check_rabbitmq_settings(where: str, files: dict[str, str], memory_limit: int | None,
                            volume_size: int | None = None) -> list[str]:
    """The limits in one deployment's RabbitMQ files (container path -> text) against its
    container's memory limit (and its data volume's size, when known)."""
    problems = []
    conf: dict[str, str] = {}
    for path in sorted(files):
        if path.startswith(RABBITMQ_CONF_D):
            conf.update(parse_rabbitmq_conf(files[path]))
    if memory_limit is None:
        return [f"{where}: rabbitmq has no memory limit to size its alarms for"]
    limit_mib = memory_limit / 2**20
    if any(key.startswith("vm_memory_high_watermark.relative") for key in conf):
        problems.append(f"{where}: vm_memory_high_watermark.relative: RabbitMQ computes it from "
                        "the host's memory, not the container's; use .absolute")
    watermark = rabbitmq_bytes(conf.get("vm_memory_high_watermark.absolute", ""))
    if watermark is None:
        problems.append(f"{where}: no vm_memory_high_watermark.absolute in {RABBITMQ_CONF_D}")
    elif watermark > memory_limit * (1 - RABBITMQ_MIN_HEADROOM):
        problems.append(f"{where}: memory alarm at {watermark / 2**20:g} MiB leaves less than "
                        f"{RABBITMQ_MIN_HEADROOM:.0%} of the {limit_mib:g} MiB container limit "
                        "as headroom")
    total = conf.get("total_memory_available_override_value")
    if total is not None and rabbitmq_bytes(total) != memory_limit:
        problems.append(f"{where}: total_memory_available_override_value = {total} is not the "
                        f"{limit_mib:g} MiB container limit")
    wal = conf.get("raft.wal_max_size_bytes", "")
    wal_bytes = int(wal) if wal.isdigit() else None
    if wal_bytes is None:
        problems.append(f"{where}: no raft.wal_max_size_bytes (its 512 MiB default needs ~1.5 GiB "
                        "of memory)")
    elif watermark is not None and wal_bytes * RABBITMQ_WAL_FACTOR > watermark:
        problems.append(f"{where}: raft.wal_max_size_bytes = {wal_bytes / 2**20:g} MiB needs "
                        f"{RABBITMQ_WAL_FACTOR}x that under the {watermark / 2**20:g} MiB memory alarm")
    advanced = files.get(RABBITMQ_ADVANCED_CONFIG, "")
    qq_wal = re.search(r"\{\s*quorum_wal_max_size_bytes\s*,\s*([0-9]+)\s*\}", advanced)
    if wal_bytes is not None and (qq_wal is None or int(qq_wal.group(1)) != wal_bytes):
        problems.append(f"{where}: {RABBITMQ_ADVANCED_CONFIG} must set rabbit "
                        f"quorum_wal_max_size_bytes to raft.wal_max_size_bytes ({wal_bytes}): "
                        "RabbitMQ 4.3 sizes the quorum queues' WAL from it")
    disk = rabbitmq_bytes(conf.get("disk_free_limit.absolute", ""))
    if disk is None:
        problems.append(f"{where}: no disk_free_limit.absolute (the 50 MB default is for "
                        "development)")
    elif watermark is not None and disk < watermark:
        problems.append(f"{where}: disk_free_limit.absolute below the memory alarm "
                        f"({disk / 2**20:g} < {watermark / 2**20:g} MiB)")
    elif volume_size is not None and disk >= volume_size:
        problems.append(f"{where}: disk_free_limit.absolute ({disk / 2**20:g} MiB) is not below "
                        f"the {volume_size / 2**20:g} MiB volume: the alarm would never clear")
    return problems


def rabbitmq_files_k8s(c: Cluster) -> tuple[dict[str, str], list[str]]:
    """The RabbitMQ configuration files the rabbitmq pod mounts from ConfigMaps."""
    pod, files, problems = c.pod("rabbitmq"), {}, []
    if pod is None:
        return files, problems
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    for mount in pod.containers[0].get("volumeMounts", []):
        path = mount["mountPath"]
        if not (path.startswith(RABBITMQ_CONF_D) or path == RABBITMQ_ADVANCED_CONFIG):
            continue
        config_map = volumes.get(mount["name"], {}).get("configMap")
        data = c._data("ConfigMap", config_map["name"]) if config_map else None
        if data is None or mount.get("subPath") not in data:
            problems.append(f"k8s rabbitmq: {path} is not a key of a ConfigMap")
            continue
        if not mount.get("readOnly"):
            problems.append(f"k8s rabbitmq: {path} must be mounted read-only")
        files[path] = data[mount["subPath"]]
    return files, problems


def rabbitmq_files_compose(service: dict, base: Path) -> tuple[dict[str, str], list[str]]:
    """The RabbitMQ configuration files Compose bind-mounts, read from the repository."""
    files, problems = {}, []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume.get("target", "")
            read_only = bool(volume.get("read_only"))
        else:
            parts = str(volume).split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else ""
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        if not (target.startswith(RABBITMQ_CONF_D) or target == RABBITMQ_ADVANCED_CONFIG):
            continue
        file = base / source
        if not file.is_file():
            problems.append(f"compose rabbitmq: {source} (mounted as {target}) is not a file")
            continue
        if not read_only:
            problems.append(f"compose rabbitmq: {target} must be mounted read-only")
        files[target] = file.read_text()
    return files, problems


def check_broker_limits(i: Inputs) -> list[str]:
    """RabbitMQ's memory alarm, WAL and disk alarm fit each deployment's container; Compose and
    Kubernetes give it the same files; nothing the RabbitMQ 4 image refuses is set."""
    c, problems = i.cluster, []
    service = (i.compose.get("services") or {}).get("rabbitmq")
    pod = c.pod("rabbitmq")
    k8s_files, found = rabbitmq_files_k8s(c)
    problems += found
    if pod is not None:
        container = pod.containers[0]
        limit = kubernetes_bytes(container.get("resources", {}).get("limits", {}).get("memory", ""))
        volume = None
        claims = {t["metadata"]["name"]: t for t in pod.workload["spec"].get("volumeClaimTemplates", [])}
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] == "/var/lib/rabbitmq" and mount["name"] in claims:
                requested = claims[mount["name"]]["spec"]["resources"]["requests"]["storage"]
                volume = kubernetes_bytes(requested)
        problems += check_rabbitmq_settings("k8s rabbitmq", k8s_files, limit, volume)
        env, _ = c.resolve(container)
        problems += [f"k8s rabbitmq: {name} is refused by the RabbitMQ 4 image"
                     for name in sorted(set(env) & RABBITMQ_DEPRECATED_VARIABLES)]
    if service is not None:
        compose_files, found = rabbitmq_files_compose(service, i.repo)
        problems += found
        memory = ((service.get("deploy") or {}).get("resources") or {}).get("limits", {}).get("memory")
        problems += check_rabbitmq_settings("compose rabbitmq", compose_files,
                                            compose_bytes(memory) if memory else None)
        env = compose_environment(service, i.repo)
        problems += [f"compose rabbitmq: {name} is refused by the RabbitMQ 4 image"
                     for name in sorted(set(env) & RABBITMQ_DEPRECATED_VARIABLES)]
        if pod is not None:
            # The limits are the same files on both sides; a cluster's own settings exist on
            # Kubernetes only.
            shared = {RABBITMQ_CONF_D + "90-limits.conf", RABBITMQ_ADVANCED_CONFIG}
            for path in sorted((set(k8s_files) | set(compose_files)) & shared):
                if k8s_files.get(path) != compose_files.get(path):
                    problems.append(f"rabbitmq: {path} differs between Compose and the ConfigMap")
    return problems


CHECKS: list[tuple[str, Callable[[Inputs], list[str]]]] = [
    ("names, namespace, NodePort 30000, pod labels", check_names),
    ("images pinned to the workspace version / upstream tags", check_images),
    ("Secret and ConfigMap names and keys exist", check_references),
    ("service variables on Kubernetes (required set, none unknown, accepted by the binary)",
     check_service_variables_k8s),
    ("service variables in compose (required set, none unknown, accepted by the binary)",
     check_service_variables_compose),
    ("ports and service DNS names on Kubernetes", check_ports_and_dns_k8s),
    ("RABBITMQ_HOSTS: every broker node by its pod's DNS name", check_broker_nodes_k8s),
    ("RabbitMQ cluster: peer discovery, cookie, quorum-keeping budget, spread, no API access",
     check_rabbitmq_cluster),
    ("ports and service names in compose", check_ports_and_dns_compose),
    ("Ingress: documented host, TLS Secret, backend Service and port", check_ingress),
    ("probes use paths the routers serve", check_probes),
    ("StatefulSets have a headless governing Service", check_statefulsets),
    ("HPA targets exist and have CPU requests", check_autoscalers),
    ("NetworkPolicy selectors and ports select something", check_network_policies),
    ("NetworkPolicies allow exactly the system's traffic", check_network_flows),
    ("credentials only in Secrets, shared by servers and clients", check_credentials),
    ("databases: psql lands in movies/orders, data on volumes", check_databases),
    ("backups: a CronJob per database, custom-format dumps on a volume, bounded", check_backups),
    ("pod hardening, resources, graceful shutdown", check_pod_hardening),
    ("compose and Kubernetes agree on shared settings", check_settings_agree),
    ("RabbitMQ's memory, WAL and disk limits fit its containers", check_broker_limits),
]


def run_checks(inputs: Inputs, out=sys.stdout) -> int:
    failed = 0
    for title, check in CHECKS:
        problems = check(inputs)
        print(f"  {'ok  ' if not problems else 'FAIL'} {title}", file=out)
        for problem in problems:
            print(f"         - {problem}", file=out)
        failed += bool(problems)
    total = len(CHECKS)
    print(f"contract: {total - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0


def load_inputs(rendered: Path, compose: Path, bin_dir: Path, repo: Path = REPO) -> Inputs:
    return Inputs(
        cluster=Cluster(load_rendered(rendered)),
        compose=load_compose(compose),
        configs=load_service_configs(bin_dir),
        routes=load_routes(repo),
        version=workspace_version(repo),
        repo=repo,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path, help="output of `kubectl kustomize Manifests/`")
    parser.add_argument("--compose", type=Path, default=REPO / "docker-compose.yml")
    parser.add_argument("--bin-dir", type=Path,
                        default=Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug")
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args(argv)
    return run_checks(load_inputs(args.rendered, args.compose, args.bin_dir, args.repo))


if __name__ == "__main__":
    sys.exit(main())
