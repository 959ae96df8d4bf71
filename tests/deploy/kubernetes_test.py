#!/usr/bin/env python3
"""deploy/kubernetes: the Kustomize base and its GPU and etcd overlays, rendered with `kubectl kustomize`
and validated against Kubernetes 1.31's schemas (kubernetes-validate, strict: no unknown
field), then checked for what the deployment promises. A deliberately broken manifest must
fail the same validation, so the check can fail.

    python tests/deploy/kubernetes_test.py          # as CTest runs it
"""
import pathlib
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31.0"  # the schemas validated against; kubernetes-validate's pin is in python-requirements.txt
VALIDATE = pathlib.Path(sys.executable).parent / "kubernetes-validate"


def render(directory):
    if not shutil.which("kubectl"):
        raise AssertionError("kubectl is not installed; run scripts/bootstrap")
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        version = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True).stdout
        raise AssertionError(f"kubectl kustomize {directory} failed (Kustomize v4 or newer is needed; this kubectl "
                             f"says: {version.strip()}):\n{result.stderr}")
    return result.stdout


def validate(text):
    """(passed, output) of strict validation of the YAML stream `text`."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(text)
        file.flush()
        result = subprocess.run([str(VALIDATE), "--strict", "--quiet", "-k", KUBERNETES_VERSION, file.name],
                                capture_output=True, text=True)
    return result.returncode == 0, result.stdout + result.stderr


def by_kind(text):
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(text) if doc}


class KubernetesManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.base_text = render(KUBERNETES / "base")
        cls.gpu_text = render(KUBERNETES / "overlays" / "gpu")
        cls.etcd_text = render(KUBERNETES / "overlays" / "etcd")
        cls.base, cls.gpu, cls.etcd = by_kind(cls.base_text), by_kind(cls.gpu_text), by_kind(cls.etcd_text)

    def test_all_render_and_pass_strict_schema_validation(self):
        for name, text in (("base", self.base_text), ("gpu overlay", self.gpu_text), ("etcd overlay", self.etcd_text)):
            passed, output = validate(text)
            self.assertTrue(passed, f"{name}:\n{output}")

    def test_a_broken_manifest_fails_the_same_validation(self):
        broken = self.base_text.replace("hostNetwork: true", "hostNetwork: true\n      hostNetworking: true", 1)
        self.assertNotEqual(broken, self.base_text)
        passed, output = validate(broken)
        self.assertFalse(passed, "an unknown field passed strict validation:\n" + output)

    def test_the_coordinator_keeps_its_state_on_a_claim_and_is_reached_through_a_service(self):
        coordinator = self.base[("StatefulSet", "fabricd-coordinator")]
        pod = coordinator["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.assertIn("--state=/var/lib/fabricd", container["args"])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        self.assertEqual(mounts["state"], "/var/lib/fabricd")
        self.assertEqual(coordinator["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "state")
        self.assertEqual(coordinator["spec"]["replicas"], 1)
        service = self.base[("Service", "fabricd-coordinator")]
        self.assertEqual({p["port"] for p in service["spec"]["ports"]}, {7070, 9400})
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        self.assertEqual(secrets, {"fabricd-coordinator-tls", "fabricd-tokens"})
        config = self.base[("ConfigMap", "fabricd")]["data"]
        self.assertTrue(config["coordinator"].startswith("fabricd-coordinator.fabricd.svc:7070"))

    def test_agents_run_on_every_node_on_the_host_network_with_probes_on_their_metrics_port(self):
        agent = self.base[("DaemonSet", "fabricd-agent")]
        pod = agent["spec"]["template"]["spec"]
        self.assertTrue(pod["hostNetwork"])
        self.assertEqual(pod["dnsPolicy"], "ClusterFirstWithHostNet")
        container = pod["containers"][0]
        self.assertIn("--metrics-listen=$(NODE_IP):9401", container["args"])
        for probe in ("livenessProbe", "readinessProbe"):
            self.assertEqual(container[probe]["httpGet"], {"path": "/healthz", "port": "metrics"}, probe)
        self.assertEqual({p["name"]: p["containerPort"] for p in container["ports"]}, {"metrics": 9401})
        self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], 30, "ranks get their grace period")
        self.assertIn({"name": "shm", "emptyDir": {"medium": "Memory"}}, pod["volumes"])

    def test_every_pod_runs_unprivileged_without_an_api_token(self):
        for manifests, key in ((self.base, ("StatefulSet", "fabricd-coordinator")),
                               (self.base, ("DaemonSet", "fabricd-agent")),
                               (self.etcd, ("StatefulSet", "fabricd-etcd"))):
            pod = manifests[key]["spec"]["template"]["spec"]
            self.assertTrue(pod["securityContext"]["runAsNonRoot"], key)
            self.assertFalse(pod["automountServiceAccountToken"], key)
            for container in pod["containers"]:
                self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"], key)
                self.assertEqual(container["securityContext"]["capabilities"]["drop"], ["ALL"], key)
        for name in ("fabricd-coordinator", "fabricd-agent"):
            self.assertFalse(self.base[("ServiceAccount", name)]["automountServiceAccountToken"])
        self.assertFalse(self.etcd[("ServiceAccount", "fabricd-etcd")]["automountServiceAccountToken"])
        for manifests in (self.base, self.etcd):
            kinds = {kind for kind, _ in manifests}
            self.assertFalse(kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"},
                             "fabricd never calls the API server and is granted nothing")

    def test_the_gpu_overlay_gives_agents_the_nodes_gpus_and_one_slot_each(self):
        pod = self.gpu[("DaemonSet", "fabricd-agent")]["spec"]["template"]["spec"]
        gpus = pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        self.assertEqual(str(gpus), self.gpu[("ConfigMap", "fabricd")]["data"]["slots"])
        self.assertEqual(pod["nodeSelector"], {"nvidia.com/gpu.present": "true"})
        self.assertIn("nvidia.com/gpu", {t["key"] for t in pod["tolerations"]})
        self.assertTrue(pod["hostNetwork"], "the overlay keeps the base")

    def test_the_etcd_overlay_runs_three_coordinators_on_the_three_members_it_adds(self):
        members = self.etcd[("StatefulSet", "fabricd-etcd")]
        self.assertEqual(members["spec"]["replicas"], 3)
        self.assertEqual(members["spec"]["podManagementPolicy"], "Parallel", "a quorum must start together")
        self.assertTrue(self.etcd[("Service", "fabricd-etcd")]["spec"]["publishNotReadyAddresses"])
        member_args = members["spec"]["template"]["spec"]["containers"][0]["args"]
        initial = next(a for a in member_args if a.startswith("--initial-cluster="))
        names = [entry.split("=")[0] for entry in initial.split("=", 1)[1].split(",")]
        self.assertEqual(names, [f"fabricd-etcd-{i}" for i in range(3)])

        coordinators = self.etcd[("StatefulSet", "fabricd-coordinator")]
        self.assertEqual(coordinators["spec"]["replicas"], 3)
        self.assertNotIn("volumeClaimTemplates", coordinators["spec"], "etcd keeps the jobs")
        container = coordinators["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        self.assertFalse([a for a in args if a.startswith("--state")], "--state excludes --store")
        store = next(a for a in args if a.startswith("--store="))
        self.assertEqual(store, "--store=etcd://" + ",".join(f"{name}.fabricd-etcd.fabricd.svc:2379" for name in names))
        # A wildcard --listen needs --advertise (fabricd refuses it otherwise): the pod's own name.
        self.assertIn("--listen=0.0.0.0:7070", args)
        self.assertIn("--advertise=$(POD_NAME).fabricd-coordinator-headless.fabricd.svc", args)
        self.assertIn({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, container["env"])
        self.assertNotIn("/var/lib/fabricd", {m["mountPath"] for m in container["volumeMounts"]})
        for probe in ("livenessProbe", "readinessProbe"):  # a follower answers /healthz too
            self.assertEqual(container[probe]["httpGet"], {"path": "/healthz", "port": "metrics"}, probe)
        # Agents are given every coordinator, by the names the coordinators proclaim.
        agents_dial = self.etcd[("ConfigMap", "fabricd")]["data"]["coordinator"].split(",")
        self.assertEqual(agents_dial,
                         [f"fabricd-coordinator-{i}.fabricd-coordinator-headless.fabricd.svc:7070" for i in range(3)])

    def test_the_etcd_overlay_keeps_a_quorum_through_disruptions_and_strangers_off_etcd(self):
        budget = self.etcd[("PodDisruptionBudget", "fabricd-etcd")]["spec"]
        self.assertEqual(budget["minAvailable"], 2)
        policy = self.etcd[("NetworkPolicy", "fabricd-etcd")]["spec"]
        self.assertEqual(policy["podSelector"], {"matchLabels": {"app.kubernetes.io/name": "fabricd-etcd"}})
        clients = next(rule for rule in policy["ingress"] if {"port": 2379} in rule.get("ports", []))
        allowed = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in clients["from"]]
        self.assertEqual(sorted(allowed), ["fabricd-coordinator", "fabricd-etcd"])
        for rule in policy["ingress"]:
            if "from" not in rule:
                self.assertEqual(rule["ports"], [{"port": 2381}], "only the metrics port is open to all")


if __name__ == "__main__":
    unittest.main(verbosity=2)
