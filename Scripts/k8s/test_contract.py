"""The contract check passes on the repository as it is, and catches each kind of mismatch it
claims to: every test below breaks one thing in a copy of the inputs and expects the problem.

Run: python3 -m unittest discover -s Scripts/k8s -p 'test_*.py'
Inputs: K8S_RENDERED (a `kubectl kustomize Manifests/` output; rendered here when unset) and
the service binaries in target/debug (`cargo build --bins`).
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import tempfile
import unittest
from pathlib import Path

import contract

REPO = contract.REPO


def render(layout: str = "Manifests", variable: str = "K8S_RENDERED") -> Path:
    given = os.environ.get(variable)
    if given:
        return Path(given)
    out = subprocess.run(["kubectl", "kustomize", str(REPO / layout)], check=True,
                         capture_output=True, text=True).stdout
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    handle.write(out)
    handle.close()
    return Path(handle.name)


def workload(inputs: contract.Inputs, name: str) -> dict:
    return inputs.cluster.pod(name).workload


def container(inputs: contract.Inputs, name: str) -> dict:
    return inputs.cluster.pod(name).containers[0]


def env_var(inputs: contract.Inputs, name: str, var: str) -> dict:
    return next(v for v in container(inputs, name)["env"] if v["name"] == var)


def drop_env(inputs: contract.Inputs, name: str, var: str) -> None:
    c = container(inputs, name)
    c["env"] = [v for v in c["env"] if v["name"] != var]


class ContractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        bin_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"
        cls.inputs = contract.load_inputs(render(), REPO / "docker-compose.yml", bin_dir)

    def broken(self) -> contract.Inputs:
        return self.inputs.copy()

    def assertProblem(self, check, inputs: contract.Inputs, *fragments: str) -> None:
        problems = check(inputs)
        for fragment in fragments:
            self.assertTrue(any(fragment in p for p in problems),
                            f"expected a problem mentioning {fragment!r}, got {problems}")

    # --- the repository as it is ---

    def test_the_repository_satisfies_every_check(self):
        out = io.StringIO()
        status = contract.run_checks(self.inputs, out)
        self.assertEqual(status, 0, out.getvalue())

    # --- variables the services need ---

    def test_a_required_variable_missing_on_kubernetes(self):
        i = self.broken()
        drop_env(i, "inventory-app", "INVENTORY_DB_HOST")
        self.assertProblem(contract.check_service_variables_k8s, i,
                           "k8s inventory-app: INVENTORY_DB_HOST is required")

    def test_a_required_variable_missing_in_compose(self):
        i = self.broken()
        del i.compose["services"]["billing-app"]["environment"]["RABBITMQ_PASSWORD"]
        self.assertProblem(contract.check_service_variables_compose, i,
                           "compose billing-app: RABBITMQ_PASSWORD is required")

    def test_the_broker_needs_one_node_or_a_list_of_nodes(self):
        i = self.broken()
        drop_env(i, "billing-app", "RABBITMQ_HOST")
        self.assertProblem(contract.check_service_variables_k8s, i,
                           "k8s billing-app: RABBITMQ_HOST (or RABBITMQ_HOSTS) is required")
        i = self.broken()
        env_var(i, "billing-app", "RABBITMQ_HOST")["name"] = "RABBITMQ_HOSTS"
        self.assertEqual([p for p in contract.check_service_variables_k8s(i) if "billing-app" in p], [])

    def test_a_misspelt_variable(self):
        i = self.broken()
        env_var(i, "api-gateway", "RABBITMQ_QUEUE")["name"] = "RABBITMQ_QUEUES"
        self.assertProblem(contract.check_service_variables_k8s, i,
                           "RABBITMQ_QUEUES is set but api-gateway does not read it",
                           "RABBITMQ_QUEUE is required")

    def test_a_value_the_service_refuses(self):
        i = self.broken()
        i.cluster.get("ConfigMap", "microservices-config")["data"]["INVENTORY_DB_PORT"] = "five"
        self.assertProblem(contract.check_service_variables_k8s, i,
                           "inventory-app refuses this configuration", "INVENTORY_DB_PORT")

    # --- ports and names ---

    def test_a_container_port_that_is_not_the_listening_port(self):
        i = self.broken()
        container(i, "inventory-app")["ports"][0]["containerPort"] = 8081
        self.assertProblem(contract.check_ports_and_dns_k8s, i,
                           "inventory-app: listens on 8080 (INVENTORY_APP_PORT)")

    def test_a_host_that_is_no_service(self):
        i = self.broken()
        i.cluster.get("ConfigMap", "microservices-config")["data"]["BILLING_DB_HOST"] = "billing-database"
        self.assertProblem(contract.check_ports_and_dns_k8s, i,
                           "BILLING_DB_HOST/BILLING_DB_PORT names 'billing-database', which is no Service")

    def test_a_url_with_the_wrong_port(self):
        i = self.broken()
        i.cluster.get("ConfigMap", "microservices-config")["data"]["BILLING_APP_URL"] = "http://billing-app:9090"
        self.assertProblem(contract.check_ports_and_dns_k8s, i,
                           "BILLING_APP_URL uses port 9090, which Service billing-app does not expose")

    def test_a_service_target_port_no_pod_opens(self):
        i = self.broken()
        i.cluster.get("Service", "rabbitmq")["spec"]["ports"][0]["targetPort"] = "amqps"
        self.assertProblem(contract.check_ports_and_dns_k8s, i,
                           "Service rabbitmq: targetPort 'amqps' is not a port of rabbitmq")

    def test_compose_host_and_port_mismatches(self):
        i = self.broken()
        env = i.compose["services"]["api-gateway"]["environment"]
        env["INVENTORY_APP_URL"] = "http://inventory:8080"
        env["RABBITMQ_PORT"] = "5673"
        self.assertProblem(contract.check_ports_and_dns_compose, i,
                           "INVENTORY_APP_URL names 'inventory', which is no service",
                           "RABBITMQ_HOST/RABBITMQ_PORT uses port 5673, but rabbitmq listens on 5672")

    def test_compose_gateway_published_on_another_port(self):
        i = self.broken()
        i.compose["services"]["entry"]["ports"] = ["3000:3001", "443:443"]
        self.assertProblem(contract.check_ports_and_dns_compose, i, "not the gateway's port 3000 on 3000")

    def test_compose_gateways_published_or_not_behind_the_entry(self):
        i = self.broken()
        i.compose["services"]["api-gateway-2"]["ports"] = ["3001:3000"]
        i.compose["services"]["api-gateway-3"] = copy.deepcopy(i.compose["services"]["api-gateway-2"])
        del i.compose["services"]["api-gateway-3"]["ports"]
        i.compose["services"]["proxy"] = {"image": "nginx:1.27"}
        self.assertProblem(contract.check_ports_and_dns_compose, i,
                           "compose api-gateway-2: publishes ['3001:3000']",
                           "entry/Caddyfile: does not balance over api-gateway-3:3000",
                           "unexpected ['proxy']")

    def test_the_nodeport(self):
        i = self.broken()
        i.cluster.get("Service", "api-gateway")["spec"]["ports"][0]["nodePort"] = 30080
        self.assertProblem(contract.check_names, i, "not a NodePort on 30000")

    # --- probes ---

    def test_a_probe_path_the_router_does_not_serve(self):
        i = self.broken()
        container(i, "billing-app")["readinessProbe"]["httpGet"]["path"] = "/healthz"
        self.assertProblem(contract.check_probes, i, "path /healthz is not served by billing-app")

    def test_liveness_on_readiness(self):
        i = self.broken()
        container(i, "api-gateway")["livenessProbe"]["httpGet"]["path"] = "/ready"
        self.assertProblem(contract.check_probes, i, "liveness must not check dependencies")

    def test_a_missing_probe(self):
        i = self.broken()
        del container(i, "rabbitmq")["readinessProbe"]
        self.assertProblem(contract.check_probes, i, "rabbitmq/rabbitmq: no readinessProbe")

    def test_route_patterns(self):
        self.assertTrue(contract.route_matches("/api/movies/{*rest}", "/api/movies/3/x"))
        self.assertTrue(contract.route_matches("/api/orders/{order_id}", "/api/orders/7"))
        self.assertFalse(contract.route_matches("/api/orders/{order_id}", "/api/orders/7/x"))
        self.assertTrue(contract.route_matches("/health", "/health/"))

    # --- Secrets and ConfigMaps ---

    def test_a_secret_key_that_does_not_exist(self):
        i = self.broken()
        env_var(i, "billing-app", "BILLING_DB_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] = "passwd"
        self.assertProblem(contract.check_references, i,
                           "BILLING_DB_PASSWORD: Secret billing-db-credentials has no key passwd")

    def test_a_secret_that_does_not_exist(self):
        i = self.broken()
        i.cluster.get("Secret", "rabbitmq-credentials")["metadata"]["name"] = "rabbitmq-secret"
        i.cluster = contract.Cluster(i.cluster.docs)
        self.assertProblem(contract.check_references, i,
                           "RABBITMQ_DEFAULT_USER: Secret rabbitmq-credentials does not exist")

    def test_a_credential_outside_the_secrets(self):
        i = self.broken()
        i.cluster.get("ConfigMap", "microservices-config")["data"]["NOTE"] = "pw billing-dev-password"
        self.assertProblem(contract.check_credentials, i, "ConfigMap microservices-config contains a credential")

    def test_a_client_and_server_on_different_secret_keys(self):
        i = self.broken()
        env_var(i, "inventory-app", "INVENTORY_DB_PASSWORD")["valueFrom"]["secretKeyRef"]["name"] = \
            "billing-db-credentials"
        self.assertProblem(contract.check_credentials, i,
                           "inventory-app INVENTORY_DB_PASSWORD", "must come from the same")

    def test_compose_client_and_server_credentials_differ(self):
        i = self.broken()
        i.compose["services"]["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"] = "other"
        self.assertProblem(contract.check_credentials, i,
                           "compose api-gateway RABBITMQ_PASSWORD='billing-dev-password' but rabbitmq")

    # --- workloads ---

    def test_an_hpa_target_that_does_not_exist(self):
        i = self.broken()
        i.cluster.get("HorizontalPodAutoscaler", "api-gateway")["spec"]["scaleTargetRef"]["name"] = "gateway"
        self.assertProblem(contract.check_autoscalers, i, "target Deployment gateway does not exist")

    def test_an_hpa_target_without_cpu_requests(self):
        i = self.broken()
        del container(i, "inventory-app")["resources"]["requests"]["cpu"]
        self.assertProblem(contract.check_autoscalers, i, "HPA inventory-app: container inventory-app has no CPU request")

    def test_an_hpa_target_with_fixed_replicas(self):
        i = self.broken()
        workload(i, "api-gateway")["spec"]["replicas"] = 2
        self.assertProblem(contract.check_autoscalers, i, "sets replicas, which the HPA owns")

    def test_a_statefulset_without_its_headless_service(self):
        i = self.broken()
        workload(i, "billing-db")["spec"]["serviceName"] = "billing-db-headless"
        i.cluster.get("Service", "rabbitmq")["spec"]["clusterIP"] = "10.43.0.10"
        self.assertProblem(contract.check_statefulsets, i,
                           "serviceName 'billing-db-headless' is no Service",
                           "Service rabbitmq is not headless")

    def test_psql_would_land_in_the_wrong_database(self):
        i = self.broken()
        drop_env(i, "billing-db", "PGDATABASE")
        self.assertProblem(contract.check_databases, i, "billing-db: POSTGRES_DB and PGDATABASE must be 'orders'")

    def test_psql_history_where_psql_cannot_write(self):
        i = self.broken()
        drop_env(i, "inventory-db", "PSQL_HISTORY")
        env_var(i, "billing-db", "PSQL_HISTORY")["value"] = "/var/lib/postgresql/.psql_history"
        self.assertProblem(contract.check_databases, i,
                           "inventory-db: PSQL_HISTORY must be a file on the data volume",
                           "billing-db: PSQL_HISTORY must be a file on the data volume, outside PGDATA "
                           "('/var/lib/postgresql/.psql_history')")

    def test_data_not_on_a_persistent_volume(self):
        i = self.broken()
        workload(i, "rabbitmq")["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] = "scratch"
        self.assertProblem(contract.check_databases, i, "rabbitmq: /var/lib/rabbitmq is not on a volumeClaimTemplate")

    def test_an_image_tag_that_is_not_the_release(self):
        i = self.broken()
        container(i, "billing-app")["image"] = "billing-app:latest"
        self.assertProblem(contract.check_images, i, "expected 'billing-app:0.1.0'", "has no fixed tag")

    def test_hardening(self):
        i = self.broken()
        container(i, "api-gateway")["securityContext"]["readOnlyRootFilesystem"] = False
        workload(i, "rabbitmq")["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
        container(i, "billing-app")["lifecycle"]["preStop"]["sleep"]["seconds"] = 25
        self.assertProblem(contract.check_pod_hardening, i,
                           "api-gateway/api-gateway: securityContext",
                           "rabbitmq: automountServiceAccountToken",
                           "billing-app: preStop 25s + drain 10s do not fit in the 30s grace period")

    def test_pod_labels_the_monitoring_relies_on(self):
        i = self.broken()
        del workload(i, "billing-db")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        self.assertProblem(contract.check_names, i, "billing-db: pod labels")

    # --- network policies ---

    def test_a_policy_selecting_nothing(self):
        i = self.broken()
        i.cluster.get("NetworkPolicy", "inventory-db")["spec"]["podSelector"]["matchLabels"]["app"] = "inventorydb"
        self.assertProblem(contract.check_network_policies, i,
                           "NetworkPolicy inventory-db: podSelector selects no pod")

    def test_a_peer_selecting_nothing_and_a_port_no_pod_opens(self):
        i = self.broken()
        rule = i.cluster.get("NetworkPolicy", "billing-app")["spec"]["egress"][0]
        rule["to"][0]["podSelector"]["matchLabels"]["app"] = "billing-database"
        i.cluster.get("NetworkPolicy", "rabbitmq")["spec"]["ingress"][0]["ports"][0]["port"] = "amqps"
        self.assertProblem(contract.check_network_policies, i,
                           "to podSelector {'matchLabels': {'app': 'billing-database'}} selects no pod",
                           "NetworkPolicy rabbitmq: port 'amqps' is open on none")

    def test_a_flow_that_should_be_blocked(self):
        i = self.broken()
        # inventory-app may now also call billing-db, and billing-db lets every pod in.
        i.cluster.get("NetworkPolicy", "inventory-app")["spec"]["egress"].append(
            {"to": [{"podSelector": {"matchLabels": {"app": "billing-db"}}}]})
        i.cluster.get("NetworkPolicy", "billing-db")["spec"]["ingress"][0]["from"].append({"podSelector": {}})
        self.assertProblem(contract.check_network_flows, i,
                           "inventory-app -> billing-db:postgres is allowed, should be blocked")

    def test_a_flow_that_should_be_allowed(self):
        i = self.broken()
        i.cluster.get("NetworkPolicy", "rabbitmq")["spec"]["ingress"][0]["from"].pop(1)
        self.assertProblem(contract.check_network_flows, i,
                           "billing-app -> rabbitmq:amqp is blocked, should be allowed")

    def test_monitoring_reaches_only_metrics(self):
        i = self.broken()
        i.cluster.get("NetworkPolicy", "rabbitmq")["spec"]["ingress"][1]["ports"] = []
        self.assertProblem(contract.check_network_flows, i,
                           "monitoring namespace -> rabbitmq:management is allowed, should be blocked")

    # --- RabbitMQ's own limits ---

    def config_map(self, i: contract.Inputs) -> dict:
        return i.cluster.get("ConfigMap", "rabbitmq-config")["data"]

    def compose_copy(self, i: contract.Inputs, edit) -> None:
        """Points Compose's 90-limits.conf mount at an edited copy of the file."""
        text = edit((REPO / "rabbitmq/90-limits.conf").read_text())
        copy = Path(tempfile.mkdtemp()) / "90-limits.conf"
        copy.write_text(text)
        volumes = i.compose["services"]["rabbitmq"]["volumes"]
        volumes[:] = [f"{copy}:/etc/rabbitmq/conf.d/90-limits.conf:ro" if "90-limits" in v else v
                      for v in volumes]

    def test_a_memory_alarm_without_headroom_under_the_container_limit(self):
        i = self.broken()
        container(i, "rabbitmq")["resources"]["limits"]["memory"] = "384Mi"
        self.assertProblem(contract.check_broker_limits, i,
                           "k8s rabbitmq: memory alarm at 320 MiB leaves less than 25% of the "
                           "384 MiB container limit")
        i = self.broken()
        del i.compose["services"]["rabbitmq"]["deploy"]
        self.assertProblem(contract.check_broker_limits, i,
                           "compose rabbitmq: rabbitmq has no memory limit")

    def test_a_relative_or_missing_memory_alarm(self):
        i = self.broken()
        data = self.config_map(i)
        data["90-limits.conf"] = data["90-limits.conf"].replace(
            "vm_memory_high_watermark.absolute = 320MiB", "vm_memory_high_watermark.relative = 0.6")
        self.assertProblem(contract.check_broker_limits, i,
                           "k8s rabbitmq: vm_memory_high_watermark.relative",
                           "k8s rabbitmq: no vm_memory_high_watermark.absolute",
                           "/etc/rabbitmq/conf.d/90-limits.conf differs between Compose and the ConfigMap")

    def test_the_default_wal_size_or_one_missing_for_rabbitmq_4_3(self):
        i = self.broken()
        self.compose_copy(i, lambda t: t.replace("raft.wal_max_size_bytes = 67108864",
                                                 "raft.wal_max_size_bytes = 536870912"))
        self.assertProblem(contract.check_broker_limits, i,
                           "compose rabbitmq: raft.wal_max_size_bytes = 512 MiB needs 3x that under "
                           "the 320 MiB memory alarm",
                           "compose rabbitmq: /etc/rabbitmq/advanced.config must set rabbit "
                           "quorum_wal_max_size_bytes to raft.wal_max_size_bytes (536870912)")
        i = self.broken()
        del self.config_map(i)["advanced.config"]
        self.assertProblem(contract.check_broker_limits, i,
                           "k8s rabbitmq: /etc/rabbitmq/advanced.config is not a key of a ConfigMap",
                           "k8s rabbitmq: /etc/rabbitmq/advanced.config must set rabbit "
                           "quorum_wal_max_size_bytes")

    def test_a_development_or_impossible_disk_alarm(self):
        i = self.broken()
        data = self.config_map(i)
        data["90-limits.conf"] = data["90-limits.conf"].replace("disk_free_limit.absolute = 320MiB",
                                                                "disk_free_limit.absolute = 50MB")
        self.assertProblem(contract.check_broker_limits, i,
                           "k8s rabbitmq: disk_free_limit.absolute below the memory alarm")
        i = self.broken()
        workload(i, "rabbitmq")["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"][
            "storage"] = "256Mi"
        self.assertProblem(contract.check_broker_limits, i,
                           "k8s rabbitmq: disk_free_limit.absolute (320 MiB) is not below the "
                           "256 MiB volume")

    def test_broker_files_mounted_writable_or_variables_rabbitmq_4_refuses(self):
        i = self.broken()
        volumes = i.compose["services"]["rabbitmq"]["volumes"]
        volumes[:] = [v.removesuffix(":ro") for v in volumes]
        i.compose["services"]["rabbitmq"]["environment"]["RABBITMQ_VM_MEMORY_HIGH_WATERMARK"] = "0.4"
        self.assertProblem(contract.check_broker_limits, i,
                           "compose rabbitmq: /etc/rabbitmq/conf.d/90-limits.conf must be mounted read-only",
                           "compose rabbitmq: RABBITMQ_VM_MEMORY_HIGH_WATERMARK is refused by the "
                           "RabbitMQ 4 image")

    def test_information_units_as_each_tool_counts_them(self):
        # RabbitMQ: M is decimal, MiB binary; Docker: M is binary.
        self.assertEqual(contract.rabbitmq_bytes("512M"), 512_000_000)
        self.assertEqual(contract.rabbitmq_bytes("320MiB"), 320 * 2**20)
        self.assertEqual(contract.rabbitmq_bytes("67108864"), 2**26)
        self.assertIsNone(contract.rabbitmq_bytes("0.4"))
        self.assertEqual(contract.compose_bytes("512M"), 512 * 2**20)
        self.assertEqual(contract.compose_bytes("1gb"), 2**30)
        self.assertEqual(contract.kubernetes_bytes("512Mi"), 512 * 2**20)
        self.assertEqual(contract.kubernetes_bytes("1G"), 10**9)

    # --- compose parsing ---

    def test_compose_interpolation(self):
        env = {"SET": "x", "EMPTY": ""}
        self.assertEqual(contract.interpolate("${UNSET:-d}", env), "d")
        self.assertEqual(contract.interpolate("${EMPTY:-d}/${EMPTY-d}", env), "d/")
        self.assertEqual(contract.interpolate("${SET:-d}$SET$${SET}", env), "xx${SET}")
        self.assertEqual(contract.interpolate("${SET:+alt}${UNSET:+alt}", env), "alt")
        self.assertEqual(contract.interpolate("${UNSET:-${SET}}", env), "x")
        with self.assertRaises(ValueError):
            contract.interpolate("${UNSET:?needed}", env)

    def test_compose_environment_forms(self):
        base = Path(tempfile.mkdtemp())
        (base / "app.env").write_text("A=1\n# comment\nB='2'\n")
        service = {"env_file": ["app.env", {"path": "missing.env", "required": False}],
                   "environment": ["B=3", "C"]}
        self.assertEqual(contract.compose_environment(service, base), {"A": "1", "B": "3"})
        self.assertEqual(contract.compose_environment({"environment": {"P": 8080, "Q": None}}, base),
                         {"P": "8080"})


class ScaledOutTest(unittest.TestCase):
    """Manifests/overlays/ha (a RabbitMQ cluster) and Manifests/overlays/https (the Ingress),
    and what the contract catches in broken copies of them."""

    @classmethod
    def setUpClass(cls):
        bin_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"
        compose = REPO / "docker-compose.yml"
        cls.ha = contract.load_inputs(render("Manifests/overlays/ha", "K8S_RENDERED_HA"), compose, bin_dir)
        cls.https = contract.load_inputs(render("Manifests/overlays/https", "K8S_RENDERED_HTTPS"), compose, bin_dir)

    assertProblem = ContractTest.assertProblem

    def test_both_layouts_satisfy_every_check(self):
        for inputs in (self.ha, self.https):
            out = io.StringIO()
            self.assertEqual(contract.run_checks(inputs, out), 0, out.getvalue())

    def test_clients_must_list_every_node_by_its_pod_name(self):
        i = self.ha.copy()
        data = i.cluster.get("ConfigMap", "rabbitmq-cluster-config")["data"]
        data["RABBITMQ_HOSTS"] = "rabbitmq-0.rabbitmq,rabbitmq-1.rabbitmq,rabbitmq-3.rabbitmq,rabbitmq"
        self.assertProblem(contract.check_broker_nodes_k8s, i,
                           "api-gateway: RABBITMQ_HOSTS names 'rabbitmq-3.rabbitmq', which is no pod's DNS name",
                           "billing-app: RABBITMQ_HOSTS names 'rabbitmq', which is no pod's DNS name",
                           "RABBITMQ_HOSTS should list every node")

    def test_a_cluster_that_could_not_form_or_keep_its_majority(self):
        i = self.ha.copy()
        sts = workload(i, "rabbitmq")
        sts["spec"]["podManagementPolicy"] = "OrderedReady"
        del sts["spec"]["template"]["spec"]["initContainers"]
        i.cluster.get("Service", "rabbitmq")["spec"]["publishNotReadyAddresses"] = False
        i.cluster.get("PodDisruptionBudget", "rabbitmq")["spec"]["maxUnavailable"] = 2
        env_var(i, "rabbitmq", "RABBITMQ_NODENAME")["value"] = "rabbit@$(MY_POD_NAME)"
        sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [{}]}
        self.assertProblem(contract.check_rabbitmq_cluster, i,
                           "podManagementPolicy must be Parallel",
                           "an init container copying it from a Secret",
                           "publishNotReadyAddresses must be true",
                           "must keep 2 of 3 nodes",
                           "node names must be the pods' DNS names",
                           "required anti-affinity",
                           "no preferred pod anti-affinity")

    def test_peer_discovery_and_queue_membership_settings(self):
        i = self.ha.copy()
        data = i.cluster.get("ConfigMap", "rabbitmq-cluster-config")["data"]
        data["80-cluster.conf"] = "cluster_formation.peer_discovery_backend = classic_config\n"
        data["enabled_plugins"] = "[rabbitmq_management,rabbitmq_prometheus]."
        self.assertProblem(contract.check_rabbitmq_cluster, i,
                           "peer_discovery_backend must be rabbit_peer_discovery_k8s",
                           "must enable rabbitmq_peer_discovery_k8s",
                           "continuous_membership_reconciliation")

    def test_no_kubernetes_api_access_and_the_nodes_reach_each_other(self):
        i = self.ha.copy()
        i.cluster.docs.append({"kind": "RoleBinding", "metadata": {"name": "rabbitmq", "namespace": "microservices"}})
        i.cluster = contract.Cluster(i.cluster.docs)
        self.assertProblem(contract.check_rabbitmq_cluster, i, "RoleBinding rabbitmq: nothing in the system needs")
        i = self.ha.copy()
        i.cluster.get("NetworkPolicy", "rabbitmq")["spec"]["egress"] = []
        self.assertProblem(contract.check_network_flows, i,
                           "rabbitmq -> rabbitmq:epmd is blocked, should be allowed")
        i = self.ha.copy()
        i.cluster.get("NetworkPolicy", "rabbitmq")["spec"]["ingress"][2]["from"].append(
            {"podSelector": {"matchLabels": {"app": "api-gateway"}}})
        i.cluster.get("NetworkPolicy", "api-gateway")["spec"]["egress"].append(
            {"to": [{"podSelector": {"matchLabels": {"app": "rabbitmq"}}}]})
        self.assertProblem(contract.check_network_flows, i,
                           "api-gateway -> rabbitmq:cluster-rpc is allowed, should be blocked")

    def test_the_ingress_backend_host_and_tls(self):
        i = self.https.copy()
        ingress = i.cluster.get("Ingress", "api-gateway")
        ingress["spec"]["rules"][0]["host"] = "example.com"
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"number": 8080}
        ingress["spec"]["tls"][0]["secretName"] = "tls"
        self.assertProblem(contract.check_ingress, i,
                           "routes hosts ['example.com'], expected ['microservices.local']",
                           "Service api-gateway has no port {'number': 8080}",
                           "no TLS for microservices.local with Secret api-gateway-tls")
        i = self.https.copy()
        i.cluster.get("NetworkPolicy", "api-gateway")["spec"]["ingress"][0]["from"] = [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "some-other-namespace"}}}]
        self.assertProblem(contract.check_network_flows, i,
                           "the ingress controller (namespace kube-system) cannot reach api-gateway:http")

    def test_backups_of_the_right_database_in_the_right_format(self):
        i = self.https.copy()
        env_var(i, "billing-db-backup", "PGHOST")["valueFrom"]["configMapKeyRef"]["key"] = "INVENTORY_DB_HOST"
        cron = container(i, "inventory-db-backup")
        cron["command"] = [c.replace("--format=custom", "--format=plain") for c in cron["command"]]
        env_var(i, "inventory-db-backup", "PGPASSWORD")["valueFrom"]["secretKeyRef"]["name"] = "billing-db-credentials"
        self.assertProblem(contract.check_backups, i,
                           "CronJob billing-db-backup: PGHOST and PGDATABASE must be billing-db and orders",
                           "CronJob inventory-db-backup: dumps must be pg_dump's custom format")
        self.assertProblem(contract.check_credentials, i, "inventory-db-backup PGPASSWORD")
        i = self.https.copy()
        i.cluster.get("NetworkPolicy", "inventory-db-backup")["spec"]["egress"][0]["to"][0]["podSelector"][
            "matchLabels"]["app"] = "billing-db"
        self.assertProblem(contract.check_network_flows, i,
                           "inventory-db-backup -> inventory-db:postgres is blocked, should be allowed")


if __name__ == "__main__":
    unittest.main()
