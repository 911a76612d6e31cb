"""orchestrator.sh, driven without a cluster.

Every subcommand runs with ORCHESTRATOR_DRY_RUN=1 and fake `vagrant`, `kubectl`, `docker` and
`curl` first on PATH: the tests check the printed command sequence and messages, and that a
dry run executed nothing (the fakes log every call). A few tests run without the dry run,
against fakes that answer like the real tools, to check what the script does with answers.

Run: python3 -m unittest discover -s Scripts/k8s -p 'test_*.py'
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "orchestrator.sh"
FAKED = ("vagrant", "kubectl", "docker", "curl")
REAL_KUBECTL = shutil.which("kubectl")

# A fake tool: logs its argv, then answers like the real one for the few calls whose output
# the script reads (curl during `test`, kubectl exec psql). State between calls lives in files.
FAKE_TOOL = textwrap.dedent('''\
    #!/usr/bin/env python3
    import os, sys, time
    from pathlib import Path
    sandbox = Path(os.environ["FAKE_SANDBOX"])
    tool, args = Path(sys.argv[0]).name, sys.argv[1:]
    with open(sandbox / "calls.log", "a") as log:
        log.write(" ".join([tool] + args) + "\\n")
    stopped = sandbox / "billing-stopped"
    orders = {"20": "00000000-0000-7000-8000-000000000020", "22": "00000000-0000-7000-8000-000000000022"}
    if tool == "curl":
        url = args[-1]
        body = args[args.index("--data") + 1] if "--data" in args else ""
        if url.endswith("/api/billing/"):
            user = body.split('"user_id": "')[1].split('"')[0]
            if stopped.exists():
                (sandbox / "queued").write_text(user)
            print('{"message":"Order received","order_id":"%s"}' % orders[user])
        elif url.endswith("/api/movies/") and "POST" in args:
            print('{"id":1,"title":"A new movie","description":"Very short description"}')
        else:
            print('[{"id":1,"title":"A new movie","description":"Very short description"}]')
        print("200", end="")
    elif tool == "docker" and args[:1] == ["info"]:
        print(os.environ.get("FAKE_DOCKER_DRIVER_STATUS", '[["Backing Filesystem","extfs"]]'))
    elif tool == "kubectl" and "wait" in args and os.environ.get("FAKE_POD_GONE"):
        # A pod that was terminating when the wait started is gone by the time it looks.
        print('Error from server (NotFound): pods "%s" not found' % os.environ["FAKE_POD_GONE"], file=sys.stderr)
        sys.exit(1)
    elif tool == "kubectl" and any("lastHeartbeatTime" in a for a in args):
        # Node name, Ready status, last heartbeat (default: a fresh one).
        beat = os.environ.get("FAKE_NODE_HEARTBEAT") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
        for node in ("master", "agent"):
            print(f"{node} True {beat}")
    elif tool == "kubectl" and any("startedAt" in a for a in args):
        # Pod name|phase|deletion|containers (ready,startedAt;...) (default: fresh and ready).
        started = os.environ.get("FAKE_POD_STARTED") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
        print(f"billing-db-0|Running||true,{started};")
        print(f"api-gateway-6d8f-old|Failed||false,;")
        print(f"api-gateway-6d8f-x2|Running|2020-01-01T00:00:00Z|true,2020-01-01T00:00:00Z;")
        print(f"api-gateway-6d8f-y7|Running||true,{started};")
    elif tool == "kubectl":
        if "scale" in args:
            if "--replicas=0" in args:
                stopped.touch()
            else:
                stopped.unlink(missing_ok=True)
        query = next((a for a in args if a.startswith("SELECT count")), None)
        if query:
            queued_22 = orders["22"] in query and stopped.exists()
            print(0 if queued_22 else 1)
    ''')


@functools.cache
def system_tools() -> Path:
    """A directory of links to everything on PATH (bash, sed, od, python3, ...) except the
    tools the tests fake, so that a test decides alone which of those exist. Built once."""
    system = Path(tempfile.mkdtemp(prefix="orchestrator-test-system-"))
    atexit.register(shutil.rmtree, system, True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = system / entry.name
            if entry.name in FAKED or target.exists() or target.is_symlink():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    return system


class Sandbox:
    """A temporary directory with the fakes and a state dir, and a PATH without the real tools."""

    def __init__(self, faked=FAKED):
        self.root = Path(tempfile.mkdtemp(prefix="orchestrator-test-"))
        self.state = self.root / "state"
        self.fakes = self.root / "fakes"
        self.system = system_tools()
        self.fakes.mkdir()
        for tool in faked:
            path = self.fakes / tool
            path.write_text(FAKE_TOOL)
            path.chmod(0o755)

    def run(self, *args: str, dry_run: bool = True, path: str | None = None, **env: str):
        environment = {
            "PATH": path or f"{self.fakes}{os.pathsep}{self.system}",
            "HOME": str(self.root),
            "FAKE_SANDBOX": str(self.root),
            "ORCHESTRATOR_STATE_DIR": str(self.state),
            "ORCHESTRATOR_DRY_RUN": "1" if dry_run else "0",
            "LANG": "C.UTF-8",
        }
        environment.update(env)
        return subprocess.run(["bash", str(SCRIPT), *args], env=environment, capture_output=True,
                              text=True, timeout=60, cwd=self.root, check=False)

    def calls(self) -> list[str]:
        log = self.root / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def commands(result) -> list[str]:
    """The commands a dry run printed, without the leading '+ '."""
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


def messages(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if not line.startswith("+ ")]


# What the script asks Kubernetes while it waits (jsonpath: one line per pod or node).
PODS_QUERY = ("kubectl --namespace microservices get pods -o 'jsonpath={range .items[*]}{.metadata.name}|"
              "{.status.phase}|{.metadata.deletionTimestamp}|{range .status.containerStatuses[*]}{.ready},"
              "{.state.running.startedAt};{end}{\"\\n\"}{end}'")
NODES_QUERY = ("kubectl get nodes -o 'jsonpath={range .items[*]}{.metadata.name} "
               "{.status.conditions[?(@.type==\"Ready\")].status} "
               "{.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime}{\"\\n\"}{end}'")
WAIT_FOR_PODS = [
    "kubectl --namespace microservices rollout status statefulset/inventory-db --timeout=600s",
    "kubectl --namespace microservices rollout status statefulset/billing-db --timeout=600s",
    "kubectl --namespace microservices rollout status statefulset/rabbitmq --timeout=600s",
    "kubectl --namespace microservices rollout status deployment/inventory-app --timeout=600s",
    "kubectl --namespace microservices rollout status statefulset/billing-app --timeout=600s",
    "kubectl --namespace microservices rollout status deployment/api-gateway --timeout=600s",
    PODS_QUERY,
]
WAIT_FOR_NODES = [
    "kubectl get node/master node/agent",
    "kubectl wait --for=condition=Ready node/master node/agent --timeout=600s",
]
WAIT_FOR_FRESH_NODES = ["kubectl get node/master node/agent", NODES_QUERY]
CLEAR_FAILED_PODS = ("kubectl --namespace microservices delete pods --field-selector=status.phase=Failed "
                     "--selector=app.kubernetes.io/part-of=microservices,app.kubernetes.io/component!=backup")
BUILD = [f"docker build -f Dockerfiles/{s}/Dockerfile -t {s}:0.1.0 ." for s in
         ("api-gateway", "inventory-app", "billing-app")]


class DryRunTest(unittest.TestCase):
    def setUp(self):
        self.sandbox = Sandbox()
        self.addCleanup(self.sandbox.cleanup)

    def run_ok(self, *args, **env):
        result = self.sandbox.run(*args, **env)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stderr, "")
        self.assertEqual(result.stdout.splitlines()[0], "dry run: commands are printed, not run")
        return result

    def tearDown(self):
        # A dry run executes none of the tools.
        self.assertEqual(self.sandbox.calls(), [])

    def test_create_prints_the_whole_sequence_then_cluster_created(self):
        result = self.run_ok("create")
        state = self.sandbox.state
        archive = "images/services-0.1.0.tar"
        self.assertEqual(commands(result), BUILD + ["vagrant up --provision"] + WAIT_FOR_NODES + [
            f"docker save -o {state}/shared/{archive} api-gateway:0.1.0 inventory-app:0.1.0 billing-app:0.1.0",
            f"vagrant ssh master -c 'sudo k3s ctr images import /vagrant-shared/{archive}'",
            f"vagrant ssh agent -c 'sudo k3s ctr images import /vagrant-shared/{archive}'",
            f"rm -f {state}/shared/{archive}",
            f"kubectl apply -k {state}",
        ] + WAIT_FOR_PODS)
        self.assertEqual(result.stdout.splitlines()[-1], "cluster created")
        self.assertIn("  API:      curl http://192.168.56.110:30000/api/movies/", result.stdout)

    def test_create_with_a_registry_pushes_instead_of_importing(self):
        result = self.run_ok("create", DOCKER_HUB_USERNAME="alice")
        pushes = [c for c in commands(result) if c.startswith("docker tag") or c.startswith("docker push")]
        self.assertEqual(pushes, [
            f"docker {verb} {args}" for s in ("api-gateway", "inventory-app", "billing-app")
            for verb, args in (("tag", f"{s}:0.1.0 alice/{s}:0.1.0"), ("push", f"alice/{s}:0.1.0"))
        ])
        self.assertFalse([c for c in commands(result) if "ctr images import" in c])
        overlay = (self.sandbox.state / "kustomization.yaml").read_text()
        self.assertIn("newName: alice/api-gateway", overlay)
        self.assertEqual(result.stdout.splitlines()[-1], "cluster created")

    def test_start(self):
        result = self.run_ok("start")
        # (printed quoted: "!" is special to an interactive shell)
        clear = CLEAR_FAILED_PODS.replace("--selector=app.kubernetes.io/part-of=microservices,app.kubernetes.io/component!=backup",
                                          "'--selector=app.kubernetes.io/part-of=microservices,app.kubernetes.io/component!=backup'")
        self.assertEqual(commands(result), ["vagrant up"] + WAIT_FOR_FRESH_NODES + [clear] + WAIT_FOR_PODS)
        self.assertEqual(result.stdout.splitlines()[-1], "cluster started")

    def test_stop_keeps_the_data(self):
        result = self.run_ok("stop")
        self.assertEqual(commands(result), ["vagrant halt agent", "vagrant halt master"])
        self.assertEqual(result.stdout.splitlines()[-1], "cluster stopped")

    def test_destroy(self):
        result = self.run_ok("destroy")
        self.assertEqual(commands(result), ["vagrant destroy --force", f"rm -rf {self.sandbox.state}"])
        self.assertEqual(result.stdout.splitlines()[-1], "cluster destroyed")

    def test_status(self):
        result = self.run_ok("status")
        self.assertEqual(commands(result), [
            "vagrant status",
            "kubectl get nodes -o wide",
            "kubectl --namespace microservices get statefulsets,deployments,pods,services,hpa,pvc -o wide",
        ])

    def test_deploy_imports_the_images_then_applies(self):
        result = self.run_ok("deploy", IMAGE_TAG="0.2.0")
        state = self.sandbox.state
        self.assertEqual(commands(result), [
            f"docker save -o {state}/shared/images/services-0.2.0.tar api-gateway:0.2.0 inventory-app:0.2.0 billing-app:0.2.0",
            "vagrant ssh master -c 'sudo k3s ctr images import /vagrant-shared/images/services-0.2.0.tar'",
            "vagrant ssh agent -c 'sudo k3s ctr images import /vagrant-shared/images/services-0.2.0.tar'",
            f"rm -f {state}/shared/images/services-0.2.0.tar",
            f"kubectl apply -k {state}",
        ] + WAIT_FOR_PODS)
        self.assertIn('newTag: "0.2.0"', (state / "kustomization.yaml").read_text())
        self.assertEqual(result.stdout.splitlines()[-1], "deployed")

    def test_deploy_to_another_cluster_needs_no_vagrant(self):
        kubeconfig = self.sandbox.root / "kind.yaml"
        result = self.sandbox.run("deploy", ORCHESTRATOR_KUBECONFIG=str(kubeconfig),
                                  path=f"{self.sandbox.fakes}{os.pathsep}{self.sandbox.system}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(commands(result), [f"kubectl apply -k {self.sandbox.state}"] + WAIT_FOR_PODS)
        self.assertIn("must already be on the nodes", result.stdout)

    def test_build_default_tag(self):
        result = self.run_ok("build")
        self.assertEqual(commands(result), BUILD)
        self.assertEqual(result.stdout.splitlines()[-1],
                         "images built: api-gateway:0.1.0 inventory-app:0.1.0 billing-app:0.1.0 ")

    def test_build_tag_and_push(self):
        result = self.run_ok("build", "0.3.1", "--push", DOCKER_HUB_USERNAME="bob")
        expected = []
        for s in ("api-gateway", "inventory-app", "billing-app"):
            expected.append(f"docker build -f Dockerfiles/{s}/Dockerfile -t {s}:0.3.1 .")
        for s in ("api-gateway", "inventory-app", "billing-app"):
            expected += [f"docker tag {s}:0.3.1 bob/{s}:0.3.1", f"docker push bob/{s}:0.3.1"]
        self.assertEqual(commands(result), expected)

    def test_logs(self):
        result = self.run_ok("logs", "billing-app", "--follow")
        self.assertEqual(commands(result), [
            "kubectl --namespace microservices logs --selector app=billing-app --all-containers "
            "--prefix --tail=200 --max-log-requests=6 --follow"])

    def test_acceptance_scenario(self):
        result = self.run_ok("test")
        cmds = commands(result)
        curl = "curl --silent --show-error --max-time 15 --write-out '\\n%{http_code}' -X"
        exec_psql = "kubectl --namespace microservices exec billing-db-0 -c postgres -- psql -tA -c"
        self.assertEqual(cmds, [
            f"{curl} POST -H 'Content-Type: application/json' --data "
            "'{\"title\": \"A new movie\", \"description\": \"Very short description\"}' "
            "http://192.168.56.110:30000/api/movies/",
            f"{curl} GET http://192.168.56.110:30000/api/movies/",
            f"{curl} POST -H 'Content-Type: application/json' --data "
            "'{\"user_id\": \"20\", \"number_of_items\": \"99\", \"total_amount\": \"250\"}' "
            "http://192.168.56.110:30000/api/billing/",
            f"{exec_psql} 'SELECT count(*) FROM orders WHERE id = '\\''ORDER_ID'\\'''",
            "kubectl --namespace microservices get statefulset billing-app -o 'jsonpath={.spec.replicas}'",
            "kubectl --namespace microservices scale statefulset billing-app --replicas=0",
            "kubectl --namespace microservices wait --for=delete pod/billing-app-0 --timeout=120s",
            f"{curl} POST -H 'Content-Type: application/json' --data "
            "'{\"user_id\": \"22\", \"number_of_items\": \"10\", \"total_amount\": \"50\"}' "
            "http://192.168.56.110:30000/api/billing/",
            f"{exec_psql} 'SELECT count(*) FROM orders WHERE id = '\\''ORDER_ID'\\'''",
            f"{exec_psql} 'SELECT count(*) FROM orders WHERE id = '\\''ORDER_ID'\\'''",
            f"{exec_psql} 'SELECT id, user_id, number_of_items, total_amount FROM orders WHERE id IN "
            "('\\''ORDER_ID'\\'', '\\''ORDER_ID'\\'')'",
            "kubectl --namespace microservices scale statefulset billing-app --replicas=1",
            "kubectl --namespace microservices rollout status statefulset/billing-app --timeout=120s",
            f"{exec_psql} 'SELECT count(*) FROM orders WHERE id = '\\''ORDER_ID'\\'''",
            f"{exec_psql} 'SELECT count(*) FROM orders WHERE id = '\\''ORDER_ID'\\'''",
            f"{exec_psql} 'SELECT id, user_id, number_of_items, total_amount FROM orders WHERE id IN "
            "('\\''ORDER_ID'\\'', '\\''ORDER_ID'\\'')'",
        ])
        self.assertEqual(result.stdout.splitlines()[-1], "acceptance test passed")

    def test_node_ip_override(self):
        result = self.run_ok("test", NODE_IP="10.1.2.3")
        self.assertTrue(all("192.168.56.110" not in c for c in commands(result)))
        self.assertIn("http://10.1.2.3:30000/api/movies/", commands(result)[1])


class GeneratedFilesTest(unittest.TestCase):
    def setUp(self):
        self.sandbox = Sandbox()
        self.addCleanup(self.sandbox.cleanup)

    def credentials(self, state: Path) -> dict[str, str]:
        return {f.name: f.read_text() for f in sorted((state / "credentials").iterdir())}

    def test_credentials_are_random_private_and_kept(self):
        self.assertEqual(self.sandbox.run("deploy").returncode, 0)
        state = self.sandbox.state
        first = self.credentials(state)
        self.assertEqual(sorted(first), ["billing-db.env", "inventory-db.env", "rabbitmq-erlang-cookie.env",
                                         "rabbitmq.env"])
        for name, text in first.items():
            pattern = r"^cookie=[0-9a-f]{48}\n$" if "cookie" in name else r"^username=\w+\npassword=[0-9a-f]{48}\n$"
            self.assertRegex(text, pattern, name)
            self.assertEqual((state / "credentials" / name).stat().st_mode & 0o777, 0o600)
        self.assertEqual((state / "credentials").stat().st_mode & 0o777, 0o700)
        secrets = {re.search("(?:password|cookie)=(.*)", t).group(1) for t in first.values()}
        self.assertEqual(len(secrets), 4)
        # Kept: a second deploy must not change what the databases were initialised with.
        self.assertEqual(self.sandbox.run("deploy").returncode, 0)
        self.assertEqual(self.credentials(state), first)
        # The state directory keeps itself out of git.
        self.assertEqual((state / ".gitignore").read_text(), "*\n")

    def test_another_checkout_gets_other_passwords(self):
        other = Sandbox()
        self.addCleanup(other.cleanup)
        self.assertEqual(self.sandbox.run("deploy").returncode, 0)
        self.assertEqual(other.run("deploy").returncode, 0)
        self.assertNotEqual(self.credentials(self.sandbox.state), self.credentials(other.state))

    @unittest.skipUnless(REAL_KUBECTL, "kubectl is not installed")
    def test_the_overlay_renders_with_the_generated_credentials_and_registry_images(self):
        self.assertEqual(self.sandbox.run("deploy", DOCKER_HUB_USERNAME="alice", IMAGE_TAG="0.2.0").returncode, 0)
        rendered = subprocess.run([REAL_KUBECTL, "kustomize", str(self.sandbox.state)], check=True,
                                  capture_output=True, text=True).stdout
        import base64
        import yaml
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
        generated = self.credentials(self.sandbox.state)
        for name in ("inventory-db", "billing-db", "rabbitmq"):
            secret = secrets[f"{name}-credentials"]
            self.assertEqual(secret["metadata"]["namespace"], "microservices")
            self.assertEqual(secret["type"], "kubernetes.io/basic-auth")
            self.assertNotIn("stringData", secret)  # the development values are gone
            password = base64.b64decode(secret["data"]["password"]).decode()
            self.assertIn(f"password={password}\n", generated[f"{name}.env"])
        images = sorted({c["image"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                         for c in d["spec"]["template"]["spec"]["containers"]})
        self.assertEqual(images, ["alice/api-gateway:0.2.0", "alice/billing-app:0.2.0",
                                  "alice/inventory-app:0.2.0", "postgres:15-alpine",
                                  "rabbitmq:4.3-management-alpine"])
        self.assertNotIn("dev-password", rendered)


    def render(self) -> list[dict]:
        import yaml
        rendered = subprocess.run([REAL_KUBECTL, "kustomize", str(self.sandbox.state)], check=True,
                                  capture_output=True, text=True).stdout
        return [d for d in yaml.safe_load_all(rendered) if d]

    @unittest.skipUnless(REAL_KUBECTL, "kubectl is not installed")
    def test_the_ha_overlay_with_the_ingress_renders_with_generated_cookie_and_certificate(self):
        import base64
        result = self.sandbox.run("deploy", ORCHESTRATOR_OVERLAY="ha", ORCHESTRATOR_INGRESS="1")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("applying the manifests (Manifests/overlays/ha with generated credentials, the Ingress",
                      result.stdout)
        self.assertIn("  HTTPS:    curl --cacert", result.stdout)
        docs = self.render()
        objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        self.assertEqual(objects[("StatefulSet", "rabbitmq")]["spec"]["replicas"], 3)
        self.assertEqual(objects[("StatefulSet", "billing-app")]["spec"]["replicas"], 2)
        self.assertIn(("Ingress", "api-gateway"), objects)
        cookie = objects[("Secret", "rabbitmq-erlang-cookie")]
        self.assertEqual(base64.b64decode(cookie["data"]["cookie"]).decode() + "\n",
                         self.credentials(self.sandbox.state)["rabbitmq-erlang-cookie.env"].split("=", 1)[1])
        tls = objects[("Secret", "api-gateway-tls")]
        self.assertEqual(tls["type"], "kubernetes.io/tls")
        certificate = (self.sandbox.state / "tls" / "tls.crt").read_text()
        self.assertEqual(base64.b64decode(tls["data"]["tls.crt"]).decode(), certificate)
        self.assertEqual((self.sandbox.state / "tls" / "tls.key").stat().st_mode & 0o777, 0o600)
        # Kept: a second deploy presents the same certificate.
        self.assertEqual(self.sandbox.run("deploy", ORCHESTRATOR_INGRESS="1").returncode, 0)
        self.assertEqual((self.sandbox.state / "tls" / "tls.crt").read_text(), certificate)
        # And back to the default layout: one broker.
        rabbitmq = next(d for d in self.render() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "rabbitmq")
        self.assertEqual(rabbitmq["spec"]["replicas"], 1)

    def test_an_unknown_overlay(self):
        result = self.sandbox.run("deploy", ORCHESTRATOR_OVERLAY="huge")
        self.assertEqual(result.returncode, 1)
        self.assertIn("ORCHESTRATOR_OVERLAY=huge: no such overlay; choose one of: ha https", result.stderr)


class BackupTest(unittest.TestCase):
    def setUp(self):
        self.sandbox = Sandbox()
        self.addCleanup(self.sandbox.cleanup)

    def test_backup_runs_each_cronjob_now_and_waits(self):
        result = self.sandbox.run("backup")
        self.assertEqual(result.returncode, 0, result.stderr)
        cmds = commands(result)
        jobs = [re.search(r"(\S+-backup-\d{14})$", c).group(1) for c in cmds if " create job " in c]
        self.assertEqual([j.rsplit("-", 1)[0] for j in jobs], ["inventory-db-backup", "billing-db-backup"])
        k = "kubectl --namespace microservices"
        self.assertEqual(cmds, [
            f"{k} create job --from=cronjob/inventory-db-backup {jobs[0]}",
            f"{k} wait --for=condition=complete job/{jobs[0]} --timeout=600s",
            f"{k} logs job/{jobs[0]} --all-containers",
            f"{k} create job --from=cronjob/billing-db-backup {jobs[1]}",
            f"{k} wait --for=condition=complete job/{jobs[1]} --timeout=600s",
            f"{k} logs job/{jobs[1]} --all-containers",
        ])
        self.assertEqual(self.sandbox.calls(), [])

    def test_restore_a_dump_from_the_backup_volume(self):
        result = self.sandbox.run("restore", "orders-20250102T030405Z.dump")
        self.assertEqual(result.returncode, 0, result.stderr)
        cmds = commands(result)
        job = re.search(r"(billing-db-restore-\d{14})", cmds[0]).group(1)
        self.assertEqual(cmds[:3], [
            f"kubectl --namespace microservices create job --from=cronjob/billing-db-backup {job} "
            "--dry-run=client -o yaml",
            "kubectl set env --local -f - RESTORE_FILE=orders-20250102T030405Z.dump -o yaml",
            "kubectl --namespace microservices create -f -",
        ])
        self.assertIn(f"kubectl --namespace microservices wait --for=condition=complete job/{job} --timeout=600s", cmds)
        self.assertIn("nothing is stored twice", result.stdout)

    def test_restore_a_dump_from_this_machine(self):
        dump = self.sandbox.root / "movies-20250102T030405Z.dump"
        dump.write_bytes(b"PGDMP")
        result = self.sandbox.run("restore", str(dump))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(commands(result), [
            "kubectl --namespace microservices exec -i inventory-db-0 -c postgres -- pg_restore --clean "
            "--if-exists --no-owner --single-transaction --exit-on-error --dbname movies"])
        self.assertIn(f"  (stdin: {dump})", result.stdout)

    def test_restore_refuses_what_is_no_dump(self):
        for name in ("", "billing.sql", "orders-latest.dump", "customers-20250102T030405Z.dump"):
            result = self.sandbox.run("restore", *([name] if name else []))
            self.assertEqual(result.returncode, 1, name)
            self.assertEqual(commands(result), [])


class FailureTest(unittest.TestCase):
    def setUp(self):
        self.sandbox = Sandbox()
        self.addCleanup(self.sandbox.cleanup)

    def test_each_missing_tool_on_one_line(self):
        result = self.sandbox.run("create", path=str(self.sandbox.system))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.splitlines(), [
            "error: vagrant is not installed: install Vagrant "
            "(https://developer.hashicorp.com/vagrant/install) with VirtualBox",
            "error: kubectl is not installed: install kubectl (https://kubernetes.io/docs/tasks/tools/)",
            "error: docker is not installed: install Docker (https://docs.docker.com/engine/install/)",
        ])
        self.assertEqual(commands(result), [])

    def test_only_the_tools_a_command_needs(self):
        stop = self.sandbox.run("stop", path=str(self.sandbox.system))
        self.assertEqual(stop.stderr.splitlines(), [
            "error: vagrant is not installed: install Vagrant "
            "(https://developer.hashicorp.com/vagrant/install) with VirtualBox"])
        only_vagrant = Sandbox(faked=("vagrant",))
        self.addCleanup(only_vagrant.cleanup)
        self.assertEqual(only_vagrant.run("stop").returncode, 0)
        test = only_vagrant.run("test")
        self.assertEqual(test.returncode, 1)
        self.assertEqual(len(test.stderr.splitlines()), 2)  # kubectl and curl
        self.assertEqual(only_vagrant.run("build").stderr.splitlines(), [
            "error: docker is not installed: install Docker (https://docs.docker.com/engine/install/)"])

    def test_push_needs_an_account(self):
        result = self.sandbox.run("build", "--push")
        self.assertEqual(result.returncode, 1)
        self.assertIn("error: build --push needs DOCKER_HUB_USERNAME", result.stderr)

    def test_latest_is_refused(self):
        for result in (self.sandbox.run("build", "latest"), self.sandbox.run("deploy", IMAGE_TAG="latest")):
            self.assertEqual(result.returncode, 1)
            self.assertIn("never 'latest'", result.stderr)
            self.assertEqual(commands(result), [])

    def test_logs_of_an_unknown_service(self):
        result = self.sandbox.run("logs", "postgres")
        self.assertEqual(result.returncode, 1)
        self.assertIn("unknown service 'postgres'; choose one of: api-gateway inventory-app billing-app "
                      "inventory-db billing-db rabbitmq", result.stderr)

    def test_unknown_command(self):
        result = self.sandbox.run("launch")
        self.assertEqual(result.returncode, 2)
        self.assertIn("error: unknown command launch", result.stderr)
        self.assertIn("./orchestrator.sh create", result.stderr)

    def test_a_real_run_without_a_cluster_says_so(self):
        result = self.sandbox.run("deploy", dry_run=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("no kubeconfig at", result.stderr)
        self.assertEqual(self.sandbox.calls(), [])


class RealRunTest(unittest.TestCase):
    """Without the dry run, the script runs the tools and acts on their answers."""

    def setUp(self):
        self.sandbox = Sandbox()
        self.addCleanup(self.sandbox.cleanup)
        shared = self.sandbox.state / "shared"
        shared.mkdir(parents=True)
        (shared / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")

    def test_commands_are_executed(self):
        self.assertEqual(self.sandbox.run("stop", dry_run=False).stdout.splitlines()[-1], "cluster stopped")
        self.assertEqual(self.sandbox.run("build", "0.4.0", dry_run=False).returncode, 0)
        self.assertEqual(self.sandbox.calls(), ["vagrant halt agent", "vagrant halt master"] + [
            f"docker build -f Dockerfiles/{s}/Dockerfile -t {s}:0.4.0 ."
            for s in ("api-gateway", "inventory-app", "billing-app")])

    def test_the_acceptance_scenario_checks_the_answers(self):
        result = self.sandbox.run("test", dry_run=False, WAIT_TIMEOUT="5")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("    POST /api/billing/ (user 22) -> 200", result.stdout)
        self.assertEqual(result.stdout.splitlines()[-1], "acceptance test passed")
        calls = self.sandbox.calls()
        scale = [c for c in calls if " scale " in c]
        self.assertEqual(scale, [
            "kubectl --namespace microservices scale statefulset billing-app --replicas=0",
            "kubectl --namespace microservices scale statefulset billing-app --replicas=1"])
        self.assertTrue(any("00000000-0000-7000-8000-000000000022" in c for c in calls))

    def test_a_lost_order_fails_the_scenario(self):
        # billing-app never comes back: the queued order is never stored.
        fake = self.sandbox.fakes / "kubectl"
        fake.write_text(fake.read_text().replace("stopped.unlink(missing_ok=True)", "pass"))
        result = self.sandbox.run("test", dry_run=False, ORDER_TIMEOUT="2", ORCHESTRATOR_POLL_INTERVAL="1")
        self.assertEqual(result.returncode, 1)
        self.assertIn("timed out after 2s waiting for order 00000000-0000-7000-8000-000000000022", result.stderr)

    def test_an_order_stored_while_billing_is_stopped_fails_the_scenario(self):
        fake = self.sandbox.fakes / "kubectl"
        fake.write_text(fake.read_text().replace("print(0 if queued_22 else 1)", "print(1)"))
        result = self.sandbox.run("test", dry_run=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("was stored while billing-app was stopped", result.stderr)
        # The scenario puts billing-app back even when it fails.
        self.assertIn("warning: scaling billing-app back to 1 replica", result.stderr)
        self.assertEqual(self.sandbox.calls()[-1],
                         "kubectl --namespace microservices scale statefulset billing-app --replicas=1")

    def test_a_wrong_status_fails_the_scenario(self):
        fake = self.sandbox.fakes / "curl"
        fake.write_text(fake.read_text().replace('print("200", end="")', 'print("503", end="")'))
        result = self.sandbox.run("test", dry_run=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("error: POST /api/movies/: expected HTTP 200, got 503", result.stderr)


class ClusterLifecycleTest(unittest.TestCase):
    """create, start, stop and the waits behave on a real cluster's timeline: each test here
    failed on the orchestrator.sh/Vagrantfile before the fix it covers."""

    def setUp(self):
        self.sandbox = Sandbox()
        self.addCleanup(self.sandbox.cleanup)
        shared = self.sandbox.state / "shared"
        shared.mkdir(parents=True)
        (shared / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")

    def real_run(self, *args, **env):
        env.setdefault("WAIT_TIMEOUT", "3")
        env.setdefault("ORCHESTRATOR_POLL_INTERVAL", "1")
        return self.sandbox.run(*args, dry_run=False, **env)

    def test_create_provisions_vms_that_a_failed_create_left_behind(self):
        # Vagrant records a machine as provisioned before its provisioners run: after a failed
        # first create, a plain `vagrant up` boots the VM and never installs K3s again.
        result = self.sandbox.run("create")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("vagrant up --provision", commands(result))
        self.assertNotIn("vagrant up", commands(result))

    def test_stop_halts_the_agent_before_the_control_plane(self):
        # The agent's kubelet can still report its pods stopping while the API server runs.
        result = self.sandbox.run("stop")
        self.assertEqual(commands(result), ["vagrant halt agent", "vagrant halt master"])
        self.assertEqual(result.stdout.splitlines()[-1], "cluster stopped")

    def test_start_does_not_trust_statuses_recorded_before_the_halt(self):
        # The API server comes back with the last statuses it had: nodes Ready, pods ready.
        result = self.real_run("start", FAKE_NODE_HEARTBEAT="2020-01-01T00:00:00Z")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertNotIn("cluster started", result.stdout)
        self.assertIn("timed out after 3s waiting for fresh heartbeats of the nodes", result.stderr)
        result = self.real_run("start", FAKE_POD_STARTED="2020-01-01T00:00:00Z")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertNotIn("cluster started", result.stdout)
        self.assertIn("waiting for every pod to be ready, its containers started after", result.stderr)

    def test_start_waits_for_fresh_statuses_then_reports(self):
        result = self.real_run("start")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.splitlines()[-1], "cluster started")
        calls = self.sandbox.calls()
        self.assertIn("vagrant up", calls)
        # Pods the shutdown stopped for good are cleared away; none is waited for.
        self.assertIn("kubectl --namespace microservices delete pods --field-selector=status.phase=Failed "
                      "--selector=app.kubernetes.io/part-of=microservices,app.kubernetes.io/component!=backup",
                      calls)
        self.assertFalse([c for c in calls if " wait " in c and "pod" in c])

    def test_a_pod_that_disappears_during_the_wait_does_not_fail_the_deploy(self):
        # A rolling update's old pod is deleted while the script waits.
        result = self.real_run("deploy", FAKE_POD_GONE="api-gateway-6d8f-x2")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.splitlines()[-1], "deployed")

    def test_images_from_dockers_containerd_store_are_saved_for_the_nodes_platform(self):
        state = self.sandbox.state
        archive = f"{state}/shared/images/services-0.1.0.tar"
        images = "api-gateway:0.1.0 inventory-app:0.1.0 billing-app:0.1.0"
        result = self.real_run("deploy",
                               FAKE_DOCKER_DRIVER_STATUS='[["driver-type","io.containerd.snapshotter.v1"]]')
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"docker save --platform linux/amd64 -o {archive} {images}", self.sandbox.calls())
        # The classic store saves one platform anyway, and older Docker has no --platform.
        (self.sandbox.root / "calls.log").unlink()
        self.assertEqual(self.real_run("deploy").returncode, 0)
        self.assertIn(f"docker save -o {archive} {images}", self.sandbox.calls())


class ConsistencyTest(unittest.TestCase):
    """orchestrator.sh, the Vagrantfile and the workspace agree on the defaults they share."""

    def test_defaults_agree(self):
        script = SCRIPT.read_text()
        vagrantfile = (REPO / "Vagrantfile").read_text()
        cargo = (REPO / "Cargo.toml").read_text().split("[workspace.package]", 1)[1]
        version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M).group(1)
        self.assertIn(f"readonly DEFAULT_TAG={version}\n", script)
        master = re.search(r'MASTER_IP = ENV.fetch\("MASTER_IP", "([\d.]+)"\)', vagrantfile).group(1)
        self.assertIn(f"readonly MASTER_IP=${{MASTER_IP:-{master}}}\n", script)
        self.assertIn('GUEST_DIR = "/vagrant-shared"', vagrantfile.replace("SHARED_GUEST_DIR", "GUEST_DIR"))
        self.assertIn("readonly GUEST_SHARED_DIR=/vagrant-shared\n", script)
        for name in ("master", "agent"):
            self.assertIn(f'config.vm.define "{name}"', vagrantfile)

    def test_versions_are_pinned(self):
        vagrantfile = (REPO / "Vagrantfile").read_text()
        self.assertRegex(vagrantfile, r'K3S_VERSION = "v\d+\.\d+\.\d+\+k3s\d+"')
        self.assertRegex(vagrantfile, r'BOX_VERSION = "\d+\.\d+\.\d+"')
        self.assertIn("config.vm.box_version = BOX_VERSION", vagrantfile)


@unittest.skipUnless(shutil.which("ruby"), "ruby is not installed")
class VagrantfileTest(unittest.TestCase):
    """The Vagrantfile, loaded by Ruby with a stand-in for Vagrant (vagrantfile_probe.rb)."""

    def load(self, **env: str) -> dict:
        state = tempfile.mkdtemp(prefix="vagrantfile-test-")
        self.addCleanup(shutil.rmtree, state, True)
        environment = {"PATH": os.environ["PATH"], "ORCHESTRATOR_STATE_DIR": state, **env}
        out = subprocess.run(["ruby", str(REPO / "Scripts/k8s/vagrantfile_probe.rb"),
                              str(REPO / "Vagrantfile")], env=environment, check=True,
                             capture_output=True, text=True, cwd=REPO).stdout
        self.state = Path(state)
        return json.loads(out)["vm"]

    def machines(self, vm: dict) -> dict[str, dict]:
        return {block["args"][0]: block for block in vm["define_blocks"]}

    def test_two_pinned_k3s_machines_on_a_private_network(self):
        vm = self.load()
        self.assertEqual(vm["box"], "bento/ubuntu-24.04")
        self.assertRegex(vm["box_version"], r"^\d+\.\d+\.\d+$")
        self.assertFalse(vm["box_check_update"])
        machines = self.machines(vm)
        self.assertEqual(sorted(machines), ["agent", "master"])
        self.assertEqual(machines["master"]["options"], {"primary": True})
        ips = {}
        for name, block in machines.items():
            config = block["config"]["vm"]
            self.assertEqual(config["hostname"], name)
            (network,) = config["network_calls"]
            self.assertEqual(network["args"], ["private_network"])
            ips[name] = network["options"]["ip"]
            (provision,) = config["provision_calls"]
            self.assertEqual(provision["args"], ["shell"])
            self.assertTrue((REPO / provision["options"]["path"]).is_file())
            env = provision["options"]["env"]
            self.assertRegex(env["K3S_VERSION"], r"^v\d+\.\d+\.\d+\+k3s\d+$")
            self.assertEqual(env["NODE_IP"], ips[name])
            self.assertEqual(env["SHARED_DIR"], "/vagrant-shared")
        self.assertEqual(ips, {"master": "192.168.56.110", "agent": "192.168.56.111"})
        agent_env = machines["agent"]["config"]["vm"]["provision_calls"][0]["options"]["env"]
        self.assertEqual(agent_env["MASTER_IP"], ips["master"])

    def test_only_the_state_directory_is_shared_and_it_ignores_itself(self):
        vm = self.load()
        folders = {call["args"][1]: call for call in vm["synced_folder_calls"]}
        self.assertEqual(folders["/vagrant"]["options"], {"disabled": True})
        self.assertEqual(folders["/vagrant-shared"]["args"][0], str(self.state / "shared"))
        self.assertTrue((self.state / "shared").is_dir())
        self.assertEqual((self.state / ".gitignore").read_text(), "*\n")

    def test_both_vms_stop_their_pods_before_vagrant_powers_them_off(self):
        # Fails on the Vagrantfile before graceful node shutdown: no such provisioner, and
        # Vagrant's default halt timeout.
        vm = self.load()
        (shutdown,) = [c for c in vm.get("provision_calls", [])
                       if c["options"].get("path") == "Scripts/k8s/vagrant/graceful-shutdown.sh"]
        env = shutdown["options"]["env"]
        grace, critical = int(env["SHUTDOWN_GRACE_PERIOD"]), int(env["SHUTDOWN_GRACE_PERIOD_CRITICAL_PODS"])
        # Every pod's own grace period fits in what the kubelet gives ordinary pods.
        longest = max(int(n) for f in (REPO / "Manifests").rglob("*.yaml")
                      for n in re.findall(r"terminationGracePeriodSeconds: (\d+)", f.read_text()))
        self.assertGreaterEqual(grace - critical, longest)
        # Vagrant waits longer than that before it forces the VM off.
        self.assertGreater(vm["graceful_halt_timeout"], grace)

    def test_sizes_and_addresses_can_be_overridden(self):
        (provider,) = self.load()["provider_blocks"]
        self.assertEqual(provider["args"], ["virtualbox"])
        self.assertEqual((provider["config"]["cpus"], provider["config"]["memory"]), (2, 2048))
        vm = self.load(VM_CPUS="4", VM_MEMORY="4096", MASTER_IP="192.168.57.10", AGENT_IP="192.168.57.11")
        self.assertEqual((vm["provider_blocks"][0]["config"]["cpus"], vm["provider_blocks"][0]["config"]["memory"]),
                         (4, 4096))
        agent = self.machines(vm)["agent"]["config"]["vm"]
        self.assertEqual(agent["network_calls"][0]["options"]["ip"], "192.168.57.11")
        self.assertEqual(agent["provision_calls"][0]["options"]["env"]["MASTER_IP"], "192.168.57.10")


class ProvisioningTest(unittest.TestCase):
    """The VM provisioning scripts find the private network's interface by its address."""

    IP_OUTPUT = textwrap.dedent("""\
        1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
        2: enp0s3    inet 10.0.2.15/24 metric 100 brd 10.0.2.255 scope global dynamic enp0s3
        3: enp0s8    inet 192.168.56.111/24 brd 192.168.56.255 scope global enp0s8
        """)

    def run_agent(self, node_ip: str):
        root = Path(tempfile.mkdtemp(prefix="provision-test-"))
        self.addCleanup(shutil.rmtree, root, True)
        (root / "bin").mkdir()
        (root / "shared").mkdir()
        (root / "shared" / "node-token").write_text("K10token\n")
        (root / "ip.txt").write_text(self.IP_OUTPUT)
        # `ip` prints a VirtualBox VM's addresses; `systemctl` says K3s already runs.
        (root / "bin" / "ip").write_text(f"#!/bin/sh\ncat {root}/ip.txt\n")
        (root / "bin" / "systemctl").write_text("#!/bin/sh\nexit 0\n")
        for tool in ("ip", "systemctl"):
            (root / "bin" / tool).chmod(0o755)
        env = {"PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}", "K3S_VERSION": "v1.33.3+k3s1",
               "NODE_IP": node_ip, "MASTER_IP": "192.168.56.110", "SHARED_DIR": str(root / "shared")}
        return subprocess.run(["bash", str(REPO / "Scripts/k8s/vagrant/k3s-agent.sh")], env=env,
                              capture_output=True, text=True, timeout=30, check=False)

    def test_the_interface_of_the_node_address(self):
        result = self.run_agent("192.168.56.111")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("on 192.168.56.111 (enp0s8) joined https://192.168.56.110:6443", result.stdout)

    def test_graceful_shutdown_provisioning_is_safe_to_run_again(self):
        root = Path(tempfile.mkdtemp(prefix="provision-test-"))
        self.addCleanup(shutil.rmtree, root, True)
        (root / "bin").mkdir()
        # systemctl logs its calls and says K3s is installed and running.
        (root / "bin" / "systemctl").write_text(f"#!/bin/sh\necho \"$*\" >>{root}/systemctl.log\nexit 0\n")
        (root / "bin" / "systemctl").chmod(0o755)
        env = {"PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}", "SHUTDOWN_GRACE_PERIOD": "90",
               "SHUTDOWN_GRACE_PERIOD_CRITICAL_PODS": "20", "K3S_CONFIG_DIR": str(root / "k3s"),
               "LOGIND_CONF_DIR": str(root / "logind.conf.d")}

        def provision():
            return subprocess.run(["bash", str(REPO / "Scripts/k8s/vagrant/graceful-shutdown.sh")], env=env,
                                  capture_output=True, text=True, timeout=30, check=False)

        first = provision()
        self.assertEqual(first.returncode, 0, first.stderr)
        config = (root / "k3s" / "config.yaml").read_text()
        self.assertIn('- "shutdown-grace-period=90s"', config)
        self.assertIn('- "shutdown-grace-period-critical-pods=20s"', config)
        logind = (root / "logind.conf.d" / "zz-k3s-graceful-node-shutdown.conf").read_text()
        self.assertIn("InhibitDelayMaxSec=100\n", logind)
        log = (root / "systemctl.log").read_text().splitlines()
        self.assertIn("restart systemd-logind", log)
        self.assertIn("restart k3s", log)
        # Again: nothing changed, nothing restarted.
        (root / "systemctl.log").unlink()
        second = provision()
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertFalse((root / "systemctl.log").exists())
        self.assertEqual((root / "k3s" / "config.yaml").read_text(), config)

    def test_the_agent_is_not_installed_twice(self):
        result = self.run_agent("192.168.56.111")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("install", result.stdout.lower().replace("installed", ""))

    def test_no_interface_with_the_address(self):
        result = self.run_agent("192.168.56.11")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no network interface has the address 192.168.56.11", result.stderr)


if __name__ == "__main__":
    unittest.main()
