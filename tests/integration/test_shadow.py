"""Shadows and canaries on a real two-worker ``bentoml serve`` (the toy kind, so versions register in a second):
the shadow set at start (``SHADOW``) compares every request's inputs on the candidate, and its figures over HTTP
equal ``python -m modelstore compare`` on the same inputs; the primary answers every request; bad shadows get a
4xx with one line; removing a shadow stops it at once and takes its series out of ``/metrics``; a canary
answers its share, sticky by ``X-Canary-Key`` across workers, and says so in the headers."""

from __future__ import annotations

import json
import sys
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.server import Server
from tests.integration.test_live_server import MANAGEMENT_KEY, Store, expected
from tests.tools import ROOT, run_in_project

pytestmark = [pytest.mark.slow, pytest.mark.integration]
INFERENCE_KEY = "inference-key-shadow"
INPUTS = np.random.default_rng(21).random((60, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory):
    root = tmp_path_factory.mktemp("shadow")
    store = Store(root)
    first, second = store.register(1), store.register(2)
    (root / "inference.keys").write_text(f"{INFERENCE_KEY}\n")
    (root / "management.keys").write_text(f"{MANAGEMENT_KEY}\n")
    env = store.env | {
        "SERVED_MODELS": first,
        "SHADOW": f"{second}:1",
        "INFERENCE_KEY_FILE": str(root / "inference.keys"),
        "MANAGEMENT_KEY_FILE": str(root / "management.keys"),
    }
    server = Server(root / "serve.log", workers=2, env=env)
    try:
        server.wait_ready()
        yield {"url": server.url, "store": store, "first": first, "second": second, "root": root}
    finally:
        server.stop()


def _headers(key: str = INFERENCE_KEY, **more) -> dict:
    return {"Authorization": f"Bearer {key}", **more}


def _shadow(url: str, method: str = "GET", body: dict | None = None, key: str = MANAGEMENT_KEY) -> httpx.Response:
    return httpx.request(method, f"{url}/models/toy/shadow", json=body, headers=_headers(key), timeout=120)


def _predict(url: str, x: np.ndarray, **headers) -> httpx.Response:
    """One request on a connection of its own (so both workers answer some)."""
    with httpx.Client(headers=_headers(**headers) | {"Connection": "close"}, timeout=30) as client:
        return client.post(f"{url}/models/toy/predict", json={"inputs": x.tolist()})


def _settled(url: str, inputs: int, timeout: float = 30) -> dict:
    """The shadow's answer once every mirrored input is compared."""
    deadline = time.monotonic() + timeout
    while True:
        answer = _shadow(url, key=INFERENCE_KEY).json()
        counts = answer["inputs"]
        if counts["compared"] + counts["dropped"] >= inputs and counts["pending"] == 0:
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)


def test_the_shadow_set_at_start_compares_every_input_as_the_offline_comparison_does(shadowed):
    url, store, first, second = shadowed["url"], shadowed["store"], shadowed["first"], shadowed["second"]
    start = _shadow(url, key=INFERENCE_KEY).json()
    assert (start["primary"], start["candidate"], start["mode"], start["share"]) == (
        first.split(":")[1], second.split(":")[1], "mirror", 1.0,
    )  # fmt: skip
    for batch in np.array_split(INPUTS, 12):
        answer = _predict(url, batch)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == first.split(":")[1] and answer.headers["x-model-role"] == "primary"
        assert [p["label"] for p in answer.json()["predictions"]] == expected(store.weights[first], batch)[0]
    served = _settled(url, len(INPUTS))
    assert served["inputs"]["dropped"] == 0 and served["inputs"]["compared"] == len(INPUTS)
    np.save(shadowed["root"] / "inputs.npy", INPUTS)
    out = shadowed["root"] / "compare.json"
    done = run_in_project(
        [sys.executable, "-m", "modelstore", "compare", first, second, "--inputs", str(shadowed["root"] / "inputs.npy"),
         "--out", str(out)],
        env=store.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{second} against {first} on {len(INPUTS)} inputs" in done.stdout
    offline = json.loads(out.read_text())
    comparison = served["comparison"]
    for exact in ("inputs", "label_agreement", "atypical", "candidate_dead_units"):
        assert comparison[exact] == offline[exact], exact
    assert comparison["mean_total_variation"] == pytest.approx(offline["mean_total_variation"], abs=1e-6)
    assert comparison["layers"].keys() == offline["layers"].keys() == {"hidden", "all"}
    for layer, row in offline["layers"].items():
        for side, value in row.items():
            assert comparison["layers"][layer][side] == pytest.approx(value, abs=1e-6), (layer, side)
    # the same figures as Prometheus series of the pair
    pair = {
        "model": "toy",
        "primary": first.split(":")[1],
        "candidate": second.split(":")[1],
        "shadow_id": served["id"],
    }
    samples = {
        (sample.name, sample.labels.get("outcome")): sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
        for sample in family.samples
        if sample.name.startswith("shadow_") and pair.items() <= sample.labels.items()
    }
    assert samples[("shadow_items_total", "compared")] == len(INPUTS)
    assert samples[("shadow_label_agreements_total", None)] == offline["label_agreement"]["count"]
    assert samples[("shadow_probability_total_variation_count", None)] == len(INPUTS)


def test_the_compare_command_refuses_in_one_line(shadowed):
    store, first, root = shadowed["store"], shadowed["first"], shadowed["root"]
    np.save(root / "wrong.npy", np.zeros((3, 5), dtype=np.float32))
    np.save(root / "right.npy", INPUTS[:3])
    cases = [
        ([first, "toy:nothere", "--inputs", str(root / "right.npy")], "error: model toy:nothere is not in the store"),
        ([first, shadowed["second"], "--inputs", str(root / "wrong.npy")], "error: --inputs"),
        ([first, shadowed["second"], "--inputs", str(root / "missing.npy")], "error: --inputs"),
    ]
    for args, start in cases:
        done = run_in_project([sys.executable, "-m", "modelstore", "compare", *args], env=store.env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(start), done.stderr


def test_every_shadow_panel_of_the_dashboard_has_data_in_a_real_prometheus(shadowed):
    from tests.integration.test_prometheus import Prometheus

    url = shadowed["url"]
    prometheus = Prometheus(int(url.rsplit(":", 1)[1]), shadowed["root"])
    try:
        assert prometheus.wait_for('up{job="sparsity-service"}', 1.0) == 1.0, "Prometheus never scraped the service"
        for batch in np.array_split(INPUTS, 4):  # traffic inside Prometheus' rate windows
            assert _predict(url, batch).status_code == 200
        compared = _settled(url, 2 * len(INPUTS))["inputs"]["compared"]
        assert prometheus.wait_for('sum(shadow_items_total{outcome="compared"})', compared) == compared
        time.sleep(2)  # two more scrapes, so every rate window spans the traffic
        board = json.loads((ROOT / "monitoring/grafana/dashboards/sparsity.json").read_text())
        row = next(p for p in board["panels"] if p["type"] == "row")
        shadow_panels = [p for p in board["panels"] if p["gridPos"]["y"] > row["gridPos"]["y"]]
        assert len(shadow_panels) == 6
        found = {}
        for panel in shadow_panels:
            for target in panel["targets"]:
                assert "shadow_" in target["expr"]
                expr = target["expr"].replace("$model", "toy").replace("$__rate_interval", "1m")
                found[panel["title"]] = prometheus.query(expr)
        assert all(found.values()), [title for title, result in found.items() if not result]
        agreement = found["Shadow: label agreement"][0]
        assert agreement["metric"] == {
            "primary": shadowed["first"].split(":")[1],
            "candidate": shadowed["second"].split(":")[1],
        }
        assert 0 <= float(agreement["value"][1]) <= 1
        layers = {r["metric"]["layer"] for r in found["Shadow: sparsity per layer, candidate minus primary"]}
        assert layers == {"hidden", "all"}
    finally:
        prometheus.stop()


def test_the_page_shows_both_versions_layers_side_by_side_for_one_input(shadowed, browser):

    from tests.integration.test_page import SCREENSHOTS, fill_fields, wait_for

    url, store, first, second = shadowed["url"], shadowed["store"], shadowed["first"], shadowed["second"]
    primary, candidate = first.split(":")[1], second.split(":")[1]
    browser.get(url + "/ui")
    browser.execute_script(f"sessionStorage.setItem('sparsity-inference-key', '{INFERENCE_KEY}')")
    browser.get(url + "/ui?model=toy")
    wait_for(
        browser, "document.body.dataset.ready === 'true' && document.querySelectorAll('#fields input').length === 4"
    )
    values = [0.7, 0.2, 0.9, 0.4]
    fill_fields(browser, values)
    wait_for(browser, "!document.getElementById('compare').hidden")
    table = browser.execute_script(
        """
        const rows = {};
        for (const row of document.querySelectorAll('#compare tr[data-layer]')) {
          rows[row.dataset.layer] = [Number(row.dataset.a), Number(row.dataset.b)];
        }
        const heads = [...document.querySelectorAll('#compare thead th')].map((th) => th.textContent);
        return {rows, heads, hint: document.getElementById('compare-hint').textContent};
        """
    )
    assert table["heads"][1:3] == [primary, candidate]
    assert "the shadow's candidate" in table["hint"]
    x = np.array([values], dtype=np.float32)
    asked = {
        version: httpx.post(
            f"{url}/models/toy/predict?version={version}", json={"inputs": x.tolist()}, headers=_headers(), timeout=10
        ).json()["predictions"][0]["sparsity"]["layers"]
        for version in (primary, candidate)
    }
    assert table["rows"] == {layer: [asked[primary][layer], asked[candidate][layer]] for layer in asked[primary]}
    assert asked[primary]["hidden"] == float(np.mean(expected(store.weights[first], x)[1]))
    browser.save_screenshot(str(SCREENSHOTS / "ui-two-versions.png"))
    browser.execute_script("sessionStorage.clear()")


def test_bad_shadows_get_one_line_and_the_management_key_is_needed(shadowed):
    url = shadowed["url"]
    cases = [
        ({"version": "nothere", "share": 0.5}, MANAGEMENT_KEY, 404, "version: model toy:nothere is not in the store"),
        ({"version": "v9", "share": 1.5}, MANAGEMENT_KEY, 400, "share: must be a number from 0 to 1; got 1.5"),
        ({"version": "v9", "share": -1}, MANAGEMENT_KEY, 400, "share: must be a number from 0 to 1; got -1"),
        ({"version": "v9", "share": 0.5, "mode": "split"}, MANAGEMENT_KEY, 400, "mode: must be one of mirror, canary"),
        ({"version": "v9", "share": 0.5}, INFERENCE_KEY, 401, "Authorization: the key is not valid"),
    ]
    for body, key, status, message in cases:
        answer = _shadow(url, "PUT", body, key=key)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"].startswith(message) and "\n" not in answer.json()["error"]
    primary = shadowed["first"].split(":")[1]
    answer = _shadow(url, "PUT", {"version": primary, "share": 0.5})
    assert answer.status_code == 400 and "is the version answering toy" in answer.json()["error"]
    missing = httpx.get(f"{url}/models/nothing/shadow", headers=_headers(), timeout=10)
    assert missing.status_code == 404 and missing.json()["error"].startswith("model: no model named 'nothing'")
    assert httpx.post(f"{url}/models/toy/shadow", headers=_headers(MANAGEMENT_KEY), timeout=10).status_code == 405


def test_removing_the_shadow_stops_it_at_once_and_a_canary_is_sticky_by_key(shadowed):
    url, store, first, second = shadowed["url"], shadowed["store"], shadowed["first"], shadowed["second"]
    if _shadow(url, key=INFERENCE_KEY).status_code == 404:
        assert _shadow(url, "PUT", {"version": second.split(":")[1], "share": 1.0}).status_code == 200
    removed = _shadow(url, "DELETE")
    assert removed.status_code == 200 and removed.json()["state"] == "removed"
    gone = _shadow(url, key=INFERENCE_KEY)
    assert (
        gone.status_code == 404
        and gone.json()["error"] == "shadow: model toy has no shadow (PUT /models/toy/shadow sets one)"
    )
    answer = _predict(url, INPUTS[:2])
    assert answer.status_code == 200 and "x-model-role" not in answer.headers
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert removed.json()["id"] not in metrics and "shadow_items_total{" not in metrics
    versions = httpx.get(f"{url}/v2/models/toy", headers=_headers(), timeout=10).json()["versions"]
    assert versions == [first.split(":")[1]]  # SHADOW loaded the candidate: it left with the shadow

    canary = _shadow(url, "PUT", {"version": second.split(":")[1], "share": 0.5, "mode": "canary"})
    assert canary.status_code == 200, canary.text
    assert canary.json()["requests"] == {"primary": 0, "candidate": 0}
    seen = {}
    for user in range(16):
        for _ in range(3):  # new connections: either worker
            answer = _predict(url, INPUTS[:3], **{"X-Canary-Key": f"user-{user}"})
            assert answer.status_code == 200
            version, role = answer.headers["x-model-version"], answer.headers["x-model-role"]
            assert seen.setdefault(user, (version, role)) == (version, role)
            tag = f"toy:{version}"
            assert [p["label"] for p in answer.json()["predictions"]] == expected(store.weights[tag], INPUTS[:3])[0]
    roles = {role for _, role in seen.values()}
    assert roles == {"primary", "candidate"}  # 16 keys at 0.5: both sides (one in 2^15 chance otherwise)
    assert all((version == second.split(":")[1]) == (role == "candidate") for version, role in seen.values())
    counted = _shadow(url, key=INFERENCE_KEY).json()["requests"]
    assert counted["primary"] + counted["candidate"] == 48
    assert _shadow(url, "DELETE").status_code == 200
