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


# --- under KServe: deploy/k8s/kserve, validated against KServe's own CRD schemas

KSERVE = K8S / "kserve"
KSERVE_SCHEMAS = ROOT / "tests" / "k8s" / "crds" / "kserve.json.gz"
"""The openAPIV3Schema of KServe's ServingRuntime and InferenceService CRDs, taken from kserve/kserve's
config/crd/full (the commit is in the file's ``source``)."""


def kserve_schemas() -> dict:
    import gzip

    with gzip.open(KSERVE_SCHEMAS) as handle:
        return json.load(handle)["schemas"]


def crd_problems(value, schema: dict, where: str = "") -> list[str]:
    """``value`` against a CRD's structural schema, strictly: types, required fields, enums, and no field the
    schema does not declare (the API server would prune it silently)."""
    problems = []
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        return problems
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}
    if kind in types and not isinstance(value, types[kind]):
        return [f"{where or '.'}: must be {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where}.{name}: required")
        for name, item in value.items():
            if properties is not None and name in properties:
                problems += crd_problems(item, properties[name], f"{where}.{name}")
            elif isinstance(extra, dict):
                problems += crd_problems(item, extra, f"{where}.{name}")
            elif properties is not None and where not in ("", ".metadata") and name != "metadata":
                problems.append(f"{where}.{name}: not a field of this schema")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += crd_problems(item, schema["items"], f"{where}[{i}]")
    return problems


@pytest.fixture(scope="module")
def kserve_objects() -> list[dict]:
    out = subprocess.run([need_tool("kubectl"), "kustomize", str(KSERVE)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_the_kserve_objects_validate_against_kserves_crd_schemas(kserve_objects):
    schemas = kserve_schemas()
    assert sorted(o["kind"] for o in kserve_objects) == ["InferenceService", "ServingRuntime"]
    for found in kserve_objects:
        schema = schemas[f"{found['apiVersion']}/{found['kind']}"]
        assert crd_problems(found, schema) == [], found["kind"]
    broken = copy.deepcopy(kserve_objects)
    runtime = next(o for o in broken if o["kind"] == "ServingRuntime")
    runtime["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    runtime["spec"]["supportedModelFormats"][0]["autoSelect"] = "yes"
    del runtime["spec"]["containers"][0]["name"]
    problems = crd_problems(runtime, schemas["serving.kserve.io/v1alpha1/ServingRuntime"])
    assert any("httpGett: not a field" in p for p in problems), problems
    assert ".spec.supportedModelFormats[0].autoSelect: must be boolean, got str" in problems
    assert ".spec.containers[0].name: required" in problems


def test_the_kserve_runtime_speaks_v2_on_the_served_port_with_keys_and_probes(kserve_objects):
    runtime = next(o for o in kserve_objects if o["kind"] == "ServingRuntime")
    service = next(o for o in kserve_objects if o["kind"] == "InferenceService")
    container = runtime["spec"]["containers"][0]
    assert runtime["spec"]["protocolVersions"] == ["v2"] and container["ports"][0]["containerPort"] == 3000
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = container["volumeMounts"][0]["mountPath"]
    assert env["MANAGEMENT_KEY_FILE"].startswith(mount) and env["INFERENCE_KEY_FILE"].startswith(mount)
    assert runtime["spec"]["volumes"][0]["secret"]["secretName"] == "sparsity-service-keys"
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] == runtime["spec"]["supportedModelFormats"][0]["name"]


def test_the_base_mounts_the_keys_from_a_secret(objects):
    spec = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["MANAGEMENT_KEY_FILE"] == "/etc/sparsity/keys/management"
    assert spec["containers"][0]["volumeMounts"] == [
        {"mountPath": "/etc/sparsity/keys", "name": "keys", "readOnly": True}
    ]
    assert spec["volumes"] == [{"name": "keys", "secret": {"secretName": "sparsity-service-keys"}}]
