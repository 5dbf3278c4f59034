"""The Kubernetes base, offline: it renders with kustomize, every object validates against the
Kubernetes schemas (strict: unknown fields refused) and the prometheus-operator CRD schemas, the
alert rules inside the PrometheusRule are alerts.yml's and pass promtool, and the generated files
are up to date. (That the probes hit real routes is checked against a real serve in
tests/integration/test_service_http.py.)"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.k8s import generate
from tests.tools import need_tool

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
NODE_VALIDATOR = ROOT / "tests" / "k8s"

pytestmark = pytest.mark.slow  # needs kubectl, node and the npm packages (make test installs them)


def render() -> list[dict]:
    out = subprocess.run([need_tool("kubectl"), "kustomize", str(K8S)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render()


def by_kind(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def test_the_base_renders_every_object_the_deployment_needs(objects):
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceMonitor",
        ]
    )
    deployment = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    hpa = by_kind(objects, "HorizontalPodAutoscaler")
    assert (
        hpa["apiVersion"] == "autoscaling/v2"
        and hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    )
    # the Service, the PDB and the ServiceMonitor select the Deployment's pods / the Service
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = by_kind(objects, kind)["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod_labels.items(), kind
    monitor = by_kind(objects, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= by_kind(objects, "Service")["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in by_kind(objects, "Service")["spec"]["ports"]}
    assert by_kind(objects, "ConfigMap")["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_workers_and_threads_match_the_cpu_limit_and_the_pod_runs_as_non_root(objects):
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    cpu_limit = int(container["resources"]["limits"]["cpu"])
    assert int(env["SERVICE_WORKERS"]) * int(env["TF_INTRA_OP_THREADS"]) == cpu_limit
    assert int(env["SERVICE_WORKERS"]) * int(env["ONNX_INTRA_OP_THREADS"]) == cpu_limit
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 120


def _strict_core_validation(objects: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    core = [o for o in objects if "monitoring.coreos.com" not in o["apiVersion"]]
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    tool = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run([str(tool), "-k", "1.32", "--strict", str(path)], capture_output=True, text=True)


def test_core_objects_validate_strictly_against_the_kubernetes_schemas(objects, tmp_path):
    ok = _strict_core_validation(objects, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("passed for resource") == 5
    broken = copy.deepcopy(objects)
    by_kind(broken, "Deployment")["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    refused = _strict_core_validation(broken, tmp_path)
    assert refused.returncode != 0 and "'httpGett' was unexpected" in refused.stdout + refused.stderr


def _node_validation(objects: list[dict]) -> subprocess.CompletedProcess:
    if not (NODE_VALIDATOR / "node_modules").is_dir():
        pytest.fail("npm packages missing: `make test` runs npm ci --prefix tests/k8s")
    return subprocess.run(
        [need_tool("node"), str(NODE_VALIDATOR / "validate.mjs")],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
    )


def test_every_object_validates_against_kubernetes_and_prometheus_operator_schemas(objects):
    ok = _node_validation(objects)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "valid ServiceMonitor/" in ok.stdout and "valid PrometheusRule/" in ok.stdout
    broken = copy.deepcopy(objects)
    by_kind(broken, "ServiceMonitor")["spec"]["endpoints"] = "http"
    by_kind(broken, "PrometheusRule")["spec"]["groups"][0]["rules"] = {"alert": "x"}
    refused = _node_validation(broken)
    assert refused.returncode == 1
    assert "INVALID ServiceMonitor/" in refused.stdout and "INVALID PrometheusRule/" in refused.stdout


def test_prometheus_rule_holds_the_alert_rules_of_alerts_yml_and_promtool_accepts_them(objects, tmp_path):
    rule = by_kind(objects, "PrometheusRule")
    alerts = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = subprocess.run([need_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_generated_files_are_up_to_date():
    for path, text in generate.outputs().items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m deploy.k8s.generate"
    dashboard = yaml.safe_load((K8S / "grafana-dashboard.yaml").read_text())
    assert json.loads(dashboard["data"]["sparsity.json"]) == json.loads(generate.DASHBOARD.read_text())
