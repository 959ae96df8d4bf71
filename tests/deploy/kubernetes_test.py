#!/usr/bin/env python3
"""deploy/kubernetes: the Kustomize base and its GPU overlay, rendered with `kubectl kustomize`
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
        cls.base, cls.gpu = by_kind(cls.base_text), by_kind(cls.gpu_text)

    def test_both_render_and_pass_strict_schema_validation(self):
        for name, text in (("base", self.base_text), ("gpu overlay", self.gpu_text)):
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
        for key in (("StatefulSet", "fabricd-coordinator"), ("DaemonSet", "fabricd-agent")):
            pod = self.base[key]["spec"]["template"]["spec"]
            self.assertTrue(pod["securityContext"]["runAsNonRoot"], key)
            self.assertFalse(pod["automountServiceAccountToken"], key)
            for container in pod["containers"]:
                self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"], key)
                self.assertEqual(container["securityContext"]["capabilities"]["drop"], ["ALL"], key)
        for name in ("fabricd-coordinator", "fabricd-agent"):
            self.assertFalse(self.base[("ServiceAccount", name)]["automountServiceAccountToken"])
        kinds = {kind for kind, _ in self.base}
        self.assertFalse(kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"},
                         "fabricd never calls the API server and is granted nothing")

    def test_the_gpu_overlay_gives_agents_the_nodes_gpus_and_one_slot_each(self):
        pod = self.gpu[("DaemonSet", "fabricd-agent")]["spec"]["template"]["spec"]
        gpus = pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        self.assertEqual(str(gpus), self.gpu[("ConfigMap", "fabricd")]["data"]["slots"])
        self.assertEqual(pod["nodeSelector"], {"nvidia.com/gpu.present": "true"})
        self.assertIn("nvidia.com/gpu", {t["key"] for t in pod["tolerations"]})
        self.assertTrue(pod["hostNetwork"], "the overlay keeps the base")


if __name__ == "__main__":
    unittest.main(verbosity=2)
