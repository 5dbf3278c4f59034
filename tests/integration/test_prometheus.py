"""A real Prometheus scraping a real two-worker service: exact counts, every metric, every
dashboard panel query, promtool on a real scrape."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.server import PROJECT_MODELS, Server, free_port
from tests.helpers import png_bytes, unit_firing_scores

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
MNIST_BATCHES = [1, 1, 1, 1, 2, 3, 5, 8, 13, 256, 256, 256, 256]  # 1059 images in 13 requests: over the
# 1000 samples the dead-unit recording rule waits for
IRIS_BATCHES = [1, 2, 4, 4]  # 11 rows
N_IMAGES = sum(MNIST_BATCHES) + 1  # + one uploaded PNG
N_MNIST_CALLS = len(MNIST_BATCHES) + 1
N_IRIS = sum(IRIS_BATCHES)
LAYERS = {"conv1", "conv2", "dense"}


class Prometheus:
    def __init__(self, service_port: int, workdir: Path) -> None:
        if shutil.which("prometheus") is None:
            pytest.fail("prometheus is not installed: `make system-deps` installs it")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SCRAPE_INTERVAL": "1s", "PROMETHEUS_WORKDIR": str(workdir)}
        self._log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "local-prometheus.sh"), str(service_port), str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, expected: float, timeout: float = 60.0) -> float | None:
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                value = self.scalar(expr)
            except httpx.HTTPError:
                value = None
            if value == expected:
                return value
            time.sleep(0.5)
        return value

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def stack(trained, tmp_path_factory, test_images):
    work = tmp_path_factory.mktemp("monitoring")
    server = Server(work / "serve.log", workers=2, env=PROJECT_MODELS)
    prometheus = None
    try:
        server.wait_ready()
        prometheus = Prometheus(server.port, work)
        assert prometheus.wait_for('up{job="sparsity-service"}', 1.0) == 1.0, "Prometheus never scraped the service"
        _send_traffic(server, test_images[0])
        yield server, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()


def _sent_images(images: np.ndarray) -> np.ndarray:
    """Every image the traffic below sends, in model input form (the upload after preprocessing)."""
    from service.codecs.pictures import image_to_mnist

    upload = image_to_mnist(png_bytes(images[-1], scale=3), 10**7)
    return np.concatenate([np.resize(images, (sum(MNIST_BATCHES), 28, 28)), upload[None]])


def _send_traffic(server: Server, images: np.ndarray) -> None:
    offsets = np.cumsum([0, *MNIST_BATCHES])
    pool_of_images = np.resize(images, (sum(MNIST_BATCHES), 28, 28))

    def mnist(i: int) -> int:
        batch = pool_of_images[offsets[i] : offsets[i + 1]].tolist()
        return httpx.post(f"{server.url}/mnist/predict", json={"images": batch}, timeout=60).status_code

    def iris(n: int) -> int:
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] * 4
        return httpx.post(f"{server.url}/iris/predict", json={"features": rows[:n]}, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:  # concurrent, so both workers take requests
        codes = list(pool.map(mnist, range(len(MNIST_BATCHES)))) + list(pool.map(iris, IRIS_BATCHES))
    upload = httpx.post(
        f"{server.url}/mnist/predict_image",
        files={"image": ("d.png", png_bytes(images[-1], scale=3), "image/png")},
        timeout=60,
    )
    codes.append(upload.status_code)
    assert codes == [200] * len(codes)
    # refused input is counted as errors, never as predictions
    for body in ('{"images": []}', "not json", '{"images": [[[NaN]]]}'):
        r = httpx.post(f"{server.url}/mnist/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400


def test_counts_match_exactly_over_two_workers(stack):
    _, prom = stack
    count = 'sum(activation_sparsity_ratio_count{model="mnist_cnn", layer="all"})'
    assert prom.wait_for(count, N_IMAGES) == N_IMAGES
    for layer in LAYERS:
        assert prom.scalar(f'sum(activation_sparsity_ratio_count{{model="mnist_cnn", layer="{layer}"}})') == N_IMAGES
    assert prom.wait_for('sum(model_predictions_total{model="mnist_cnn"})', N_IMAGES) == N_IMAGES
    assert prom.wait_for('sum(model_predictions_total{model="iris_l1"})', N_IRIS) == N_IRIS
    assert prom.scalar('sum(model_input_contribution_sparsity_ratio_count{model="iris_l1"})') == N_IRIS
    # requests that arrive together share a forward pass (service.batching): every request is one pass, less the
    # requests that queued (each counted in model_queue_wait_seconds) plus the passes they shared (model_batch_items)
    for model, calls in (("mnist_cnn", N_MNIST_CALLS), ("iris_l1", len(IRIS_BATCHES))):
        passes = prom.scalar(f'sum(model_inference_duration_seconds_count{{model="{model}"}})')
        queued = prom.scalar(f'sum(model_queue_wait_seconds_count{{model="{model}"}})')
        shared = prom.scalar(f'sum(model_batch_items_count{{model="{model}"}})')
        assert passes == calls - queued + shared and 1 <= passes <= calls, model
    mean = prom.scalar(
        'sum(activation_sparsity_ratio_sum{model="mnist_cnn", layer="all"}) '
        '/ sum(activation_sparsity_ratio_count{model="mnist_cnn", layer="all"})'
    )
    assert 0.0 < mean < 1.0


def test_per_unit_firing_and_dead_units_equal_an_independent_count(stack, reference, test_images, trained):
    """Units fired over both workers, counted by the service, summed by Prometheus: each unit's count
    equals the count from an independent Keras run on the same images, and the recording rule's dead
    ratio equals the share of units that fired on none of them."""
    _, prom = stack
    expected = reference(_sent_images(test_images[0]))
    assert prom.wait_for('sum(activation_samples_total{model="mnist_cnn"})', N_IMAGES) == N_IMAGES
    counts = {
        (r["metric"]["layer"], int(r["metric"]["unit"])): float(r["value"][1])
        for r in prom.query('sum by (layer, unit) (activation_unit_fired_total{model="mnist_cnn"})')
    }
    for layer, fired in expected["fired"].items():
        assert [counts[(layer, unit)] for unit in range(fired.shape[1])] == fired.sum(axis=0).tolist(), layer
    ratios = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(ratios) < len(LAYERS):  # the rule runs after a scrape
        ratios = {r["metric"]["layer"]: float(r["value"][1]) for r in prom.query("activation_dead_units:ratio_1h")}
        time.sleep(0.5)
    for layer, fired in expected["fired"].items():
        assert ratios[layer] == pytest.approx(float(np.mean(~fired.any(axis=0))), abs=1e-12), layer


def test_typicality_is_counted_for_every_prediction(stack, reference, test_images, trained):
    _, prom = stack
    assert prom.wait_for('sum(model_typicality_score_count{model="mnist_cnn"})', N_IMAGES) == N_IMAGES
    assert prom.wait_for('sum(model_typicality_score_count{model="iris_l1"})', N_IRIS) == N_IRIS
    import bentoml

    calibration = trained["mnist"]["typicality"]
    expected = reference(_sent_images(test_images[0]))
    state = bentoml.models.get(expected["tag"]).path_of(calibration["state_file"])
    scores = unit_firing_scores(expected["shares"], state, calibration["features"])
    atypical = int(np.sum(scores > calibration["threshold"]))
    assert prom.scalar('sum(model_atypical_predictions_total{model="mnist_cnn"})') == atypical
    assert prom.scalar('max(model_typicality_threshold{model="mnist_cnn"})') == pytest.approx(calibration["threshold"])


def _labels(prom: Prometheus, metric: str) -> set[tuple[str, ...]]:
    result = prom.query(metric)
    assert result, f"{metric} is missing"
    keys = [k for k in result[0]["metric"] if k not in ("__name__", "instance", "job")]
    return {tuple(r["metric"].get(k, "") for k in sorted(keys)) for r in result} | {tuple(sorted(keys))}


def test_every_metric_exists_with_its_labels(stack, trained):
    _, prom = stack
    (mnist,) = {r["metric"]["version"] for r in prom.query('activation_samples_total{model="mnist_cnn"}')}
    (iris,) = {r["metric"]["version"] for r in prom.query('model_typicality_threshold{model="iris_l1"}')}
    models = {("iris_l1", iris), ("mnist_cnn", mnist), ("model", "version")}
    layer_pairs = {("all", "mnist_cnn", mnist), *((layer, "mnist_cnn", mnist) for layer in LAYERS)}
    assert _labels(prom, "activation_sparsity_baseline_ratio") == layer_pairs | {("layer", "model", "version")}
    baseline = trained["mnist"]["activation_sparsity"]
    for layer in [*LAYERS, "all"]:
        value = prom.scalar(f'activation_sparsity_baseline_ratio{{model="mnist_cnn", layer="{layer}"}}')
        assert value == pytest.approx(baseline[layer]["mean"], abs=1e-9)
    assert _labels(prom, "activation_sparsity_ratio_count") == layer_pairs | {("layer", "model", "version")}
    units = {
        (layer["name"], "mnist_cnn", str(unit), mnist)
        for layer in trained["mnist"]["relu_layers"]
        for unit in range(layer["units"])
    }
    assert _labels(prom, "activation_unit_fired_total") == units | {("layer", "model", "unit", "version")}
    assert _labels(prom, "activation_samples_total") == {("mnist_cnn", mnist), ("model", "version")}
    assert _labels(prom, "model_typicality_score_count") == models
    assert _labels(prom, "model_atypical_predictions_total") == models
    assert _labels(prom, "model_typicality_threshold") == models
    weights = _labels(prom, "model_weight_sparsity_ratio")
    assert ("coefficients", "iris_l1", iris) in weights and ("conv1", "mnist_cnn", mnist) in weights
    assert (
        prom.scalar('model_weight_sparsity_ratio{model="iris_l1"}')
        == trained["iris"]["weight_sparsity"]["coefficients"]
    )
    assert _labels(prom, "model_input_contribution_sparsity_ratio_count") == {("iris_l1", iris), ("model", "version")}
    assert _labels(prom, "model_inference_duration_seconds_count") == models
    # every class label exists from the start, predicted or not
    predictions = _labels(prom, "model_predictions_total")
    assert {(str(d), "mnist_cnn", mnist) for d in range(10)} <= predictions
    assert {(n, "iris_l1", iris) for n in ("setosa", "versicolor", "virginica")} <= predictions
    buckets = {r["metric"]["le"] for r in prom.query('model_inference_duration_seconds_bucket{model="mnist_cnn"}')}
    assert "0.0001" in buckets
    ratio_buckets = {
        r["metric"]["le"] for r in prom.query('activation_sparsity_ratio_bucket{model="mnist_cnn", layer="all"}')
    }
    assert {float(le) for le in ratio_buckets} == {round(0.05 * i, 2) for i in range(21)} | {float("inf")}
    request_buckets = {
        float(r["metric"]["le"])
        for r in prom.query('bentoml_service_request_duration_seconds_bucket{endpoint="/mnist/predict"}')
    }
    assert min(request_buckets) == 0.001


def test_every_dashboard_panel_query_returns_data(stack):
    _, prom = stack
    assert prom.wait_for('sum(model_predictions_total{model="iris_l1"})', N_IRIS) == N_IRIS
    time.sleep(2)  # a couple more scrapes after the last request, so every rate window spans the traffic
    board = json.loads((ROOT / "monitoring/grafana/dashboards/sparsity.json").read_text())
    variable = board["templating"]["list"][0]
    models = {r["metric"]["model"] for r in prom.query(variable["query"].replace("label_values(", "").split(",")[0])}
    assert models == {"mnist_cnn", "iris_l1"}
    empty = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):  # a row has none
            if "shadow_" in target["expr"]:
                continue  # the shadow row's queries: tests/integration/test_shadow.py, on a server with a shadow
            # every panel for the CNN; for the L1 classifier, the panels that are not about ReLU layers
            for model in ("mnist_cnn", "iris_l1"):
                if model == "iris_l1" and ("activation_" in target["expr"] or "model_drift_" in target["expr"]):
                    continue  # (drift windows need a ReLU card's drift baseline: the L1 classifier has none)
                expr = target["expr"].replace("$model", model).replace("$__rate_interval", "1m")
                if not prom.query(expr):
                    empty.append(f"{panel['title']} ({model}): {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    live = prom.query(
        board["panels"][3]["targets"][0]["expr"].replace("$model", "mnist_cnn").replace("$__rate_interval", "1m")
    )
    assert {r["metric"]["layer"] for r in live} == LAYERS | {"all"}


def test_alert_rules_are_loaded_by_the_real_prometheus(stack):
    _, prom = stack
    groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    alerts = {"ServiceDown", "SparsityDrift", "DeadUnitsHigh", "LatencyHigh", "AtypicalInputsHigh"}
    alerts.add("ModelInputsDrifted")
    records = {"activation_unit_fired:increase_1h", "activation_samples:increase_1h", "activation_dead_units:ratio_1h"}
    assert names == alerts | records
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])


def test_promtool_check_metrics_on_a_real_scrape(stack):
    server, _ = stack
    scrape = httpx.get(f"{server.url}/metrics", timeout=10).text
    out = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True, check=False)
    assert "activation_sparsity_ratio_bucket" in scrape
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
