"""Monitoring and deployment files, validated with the real tools that run here (promtool,
docker-compose, JSON schemas). Grafana and Docker themselves cannot run on these machines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.tools import need_tool

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "monitoring" / "prometheus"
GRAFANA = ROOT / "monitoring" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sparsity.json"
SCHEMA = ROOT / "tests" / "data" / "grafana-dashboard-v11.6.jsonschema.json"


def _run(*cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env=env)


@pytest.mark.system
def test_promtool_check_config():
    out = _run(need_tool("promtool"), "check", "config", str(PROM / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.system
def test_promtool_check_rules_finds_the_six_alerts():
    out = _run(need_tool("promtool"), "check", "rules", str(PROM / "alerts.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    groups = {g["name"]: g["rules"] for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]}
    assert [r["record"] for r in groups["sparsity-dead-units"]] == [
        "activation_unit_fired:increase_1h",
        "activation_samples:increase_1h",
        "activation_dead_units:ratio_1h",
    ]
    assert {r["alert"] for r in groups["sparsity-service"]} == {
        "ServiceDown",
        "SparsityDrift",
        "DeadUnitsHigh",
        "LatencyHigh",
        "AtypicalInputsHigh",
        "ModelInputsDrifted",
    }


@pytest.mark.system
def test_promtool_unit_tests_of_every_alert():
    out = _run(need_tool("promtool"), "test", "rules", str(PROM / "tests" / "alerts_test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    tests = yaml.safe_load((PROM / "tests" / "alerts_test.yml").read_text())["tests"]
    alerts = ("ServiceDown", "SparsityDrift", "DeadUnitsHigh", "LatencyHigh", "AtypicalInputsHigh")
    alerts += ("ModelInputsDrifted",)
    for alert in alerts:
        checks = [c for t in tests for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in checks), f"{alert}: no firing case"
        assert any(not c["exp_alerts"] for c in checks), f"{alert}: no quiet case"


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_matches_grafana_schema():
    jsonschema.validate(_dashboard(), json.loads(SCHEMA.read_text()))


def test_dashboard_json_is_what_the_generator_makes():
    sys.path.insert(0, str(GRAFANA))
    try:
        import dashboard as generator
    finally:
        sys.path.remove(str(GRAFANA))
    assert DASHBOARD.read_text() == generator.render(), "run python monitoring/grafana/dashboard.py"


def test_dashboard_has_every_panel_the_issue_asks_for():
    panels = _dashboard()["panels"]
    text = " ".join(p["title"].lower() for p in panels)
    for words in (
        "request rate",
        "error rate",
        "p50 / p95 / p99",
        "baseline",
        "distribution",
        "dead units",
        "per class",
        "inference time",
        "weight sparsity",
    ):
        assert words in text, words
    assert any(p["type"] == "heatmap" for p in panels)
    rows = [p for p in panels if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["Shadow: the candidate against the primary, on the same requests"]
    below = [p["title"].lower() for p in panels if p["gridPos"]["y"] > rows[0]["gridPos"]["y"]]
    for words in ("label agreement", "probability shift", "sparsity per layer", "atypical", "dead units", "dropped"):
        assert any(words in title and title.startswith("shadow") for title in below), words
    assert [v["name"] for v in _dashboard()["templating"]["list"]] == ["model"]


def test_panels_refer_to_the_provisioned_datasource_by_uid():
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (datasource,) = provisioned["datasources"]
    uid = datasource["uid"]
    assert datasource["url"] == "http://prometheus:9090"
    board = _dashboard()
    for panel in (p for p in board["panels"] if p["type"] != "row"):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_dashboard_provider_path_is_where_compose_mounts_the_dashboards():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "provider.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{path}:ro" in mounts
    assert "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


@pytest.mark.system
def test_compose_passes_docker_compose_config():
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "only-for-this-test"}
    out = _run(need_tool("docker-compose"), "-f", "docker-compose.yml", "config", "-q", env=env)
    assert out.returncode == 0, out.stderr


@pytest.mark.system
def test_compose_refuses_to_start_grafana_without_a_password():
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    out = _run(need_tool("docker-compose"), "-f", "docker-compose.yml", "config", "-q", env=env)
    assert out.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in out.stderr


def test_compose_matches_the_compose_spec_schema():
    tool = Path(sys.executable).parent / "check-jsonschema"
    out = _run(str(tool), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_services_are_pinned_healthy_and_safe():
    services = _compose()["services"]
    assert set(services) == {"service", "prometheus", "grafana"}
    for name, svc in services.items():
        image = svc["image"]
        assert re.search(r":[^:]+$", image) and not image.endswith(":latest"), f"{name}: unpinned {image}"
        assert "healthcheck" in svc and svc["restart"] == "unless-stopped", name
        assert svc["networks"] == ["monitoring"], name
    assert re.fullmatch(r"prom/prometheus:v2\.\d+\.\d+", services["prometheus"]["image"])
    assert services["service"]["healthcheck"]["start_period"] in ("120s", "180s", "300s")
    grafana = services["grafana"]
    assert not any(p.split(":")[-2] == "3000" for p in grafana["ports"]), "Grafana must not take host port 3000"
    env = grafana["environment"]
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false" and env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "admin" not in env["GF_SECURITY_ADMIN_PASSWORD"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_every_bind_mounted_path_exists():
    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_prometheus_config_points_at_the_compose_service_and_loads_the_rules():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["sparsity-service"]["static_configs"][0]["targets"] == ["service:3000"]
    assert "./monitoring/prometheus:/etc/prometheus:ro" in _compose()["services"]["prometheus"]["volumes"]
