"""deploy/kubernetes/ validated offline: every manifest against Kubernetes' own schemas
(kubernetes-validate, strict), and the fleet's wiring checked: node ids and advertise URLs from
the StatefulSet's stable identities through the headless Service, secrets only from the
Secret, probes on /healthz, and the ConfigMap's config file accepted by `corral serve
--print-config` (CORRAL_BIN)."""

import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"


def documents():
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def by_kind(kind):
    return [document for _, document in documents() if document["kind"] == kind]


class KubernetesManifests(unittest.TestCase):
    def test_every_manifest_is_valid_against_the_schemas(self):
        files = [str(path) for path in sorted(MANIFESTS.glob("*.yaml")) if path.name != "kustomization.yaml"]
        result = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, *files],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_the_kustomization_lists_every_manifest(self):
        kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
        listed = set(kustomization["resources"])
        present = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
        self.assertEqual(listed, present)

    def test_nodes_get_stable_ids_and_addresses_from_the_headless_service(self):
        (statefulset,) = by_kind("StatefulSet")
        services = {service["metadata"]["name"]: service for service in by_kind("Service")}
        headless = services[statefulset["spec"]["serviceName"]]
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        self.assertTrue(headless["spec"]["publishNotReadyAddresses"])
        (container,) = statefulset["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        self.assertEqual(env["CORRAL_NODE_ID"]["value"], "$(POD_NAME)")
        self.assertEqual(
            env["CORRAL_ADVERTISE_URL"]["value"],
            f"http://$(POD_NAME).{headless['metadata']['name']}.$(POD_NAMESPACE).svc:8000",
        )
        # Secrets come from the Secret, never from the ConfigMap.
        (secret,) = by_kind("Secret")
        for name in ("CORRAL_DATABASE_URL", "CORRAL_NODE_SECRET"):
            self.assertEqual(env[name]["valueFrom"]["secretKeyRef"]["name"], secret["metadata"]["name"])
            self.assertIn(env[name]["valueFrom"]["secretKeyRef"]["key"], secret["stringData"])
        selector = statefulset["spec"]["selector"]["matchLabels"]
        for service in services.values():
            self.assertEqual(service["spec"]["selector"], selector)
        (budget,) = by_kind("PodDisruptionBudget")
        self.assertEqual(budget["spec"]["selector"]["matchLabels"], selector)
        self.assertEqual(budget["spec"]["maxUnavailable"], 1)

    def test_probes_requests_and_privileges_are_stated(self):
        (statefulset,) = by_kind("StatefulSet")
        pod = statefulset["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            self.assertEqual(container[probe]["httpGet"]["path"], "/healthz")
        self.assertIn("cpu", container["resources"]["requests"])
        self.assertIn("memory", container["resources"]["requests"])
        self.assertFalse(pod["automountServiceAccountToken"])
        context = container["securityContext"]
        self.assertTrue(context["privileged"])
        # The reason for every privilege is written beside it and in docs/fleet.md.
        text = (MANIFESTS / "statefulset.yaml").read_text()
        for reason in ("namespaces", "pivot_root", "cgroup", "seccomp"):
            self.assertIn(reason, text)
        self.assertIn("## Privileges", (ROOT / "docs" / "fleet.md").read_text())

    def test_the_config_file_is_one_corral_accepts(self):
        corral = os.environ.get("CORRAL_BIN")
        if not corral:
            self.skipTest("CORRAL_BIN is not set (scripts/test sets it)")
        (config_map,) = by_kind("ConfigMap")
        with tempfile.TemporaryDirectory() as directory:
            path = pathlib.Path(directory) / "corral.toml"
            path.write_text(config_map["data"]["corral.toml"])
            environment = dict(os.environ)
            environment.update(
                {
                    "CORRAL_DATABASE_URL": "postgres://corral:secret@db.invalid/corral",
                    "CORRAL_NODE_ID": "corral-0",
                    "CORRAL_ADVERTISE_URL": "http://corral-0.corral-nodes.default.svc:8000",
                }
            )
            result = subprocess.run(
                [corral, "serve", "--config", str(path), "--print-config"],
                capture_output=True,
                text=True,
                env=environment,
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('node_id = "corral-0"', result.stdout)
        self.assertIn("node_lease_seconds = 15.0", result.stdout)
        # The database password is not printed.
        self.assertNotIn("secret@", result.stdout)
        self.assertIn("corral:***@db.invalid", result.stdout)


if __name__ == "__main__":
    unittest.main()
