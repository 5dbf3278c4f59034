"""The live model server, on a real ``bentoml serve`` with two workers (the toy kind: a NumPy MLP, so versions
register in a second): the Open Inference Protocol through its own clients (``tritonclient``, the ``kserve``
SDK, from their venv), versions loaded, replaced and unloaded while serving, in every worker, a version that
does not reproduce its card refused while the old one serves on, keys rotated without a restart, and the
request and model series bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.server import Server
from tests.integration.conftest import SCREENSHOTS
from tests.integration.test_page import wait_for
from tests.tools import ROOT, run_in_project

pytestmark = [pytest.mark.slow, pytest.mark.integration]
CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
INFERENCE_KEY, MANAGEMENT_KEY = "inference-key-1", "management-key-1"
X = np.array([[0.1, 0.9, 0.3, 0.5], [0.0, 0.0, 0.0, 0.0], [0.7, 0.2, 0.9, 0.4]], dtype=np.float32)


def weights_of(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.normal(size=(4, 16)), "b1": rng.normal(size=16) - 0.5}
    return weights | {"w2": rng.normal(size=(16, 3)), "b2": np.zeros(3)}


def expected(weights: dict, x: np.ndarray) -> tuple[list[int], np.ndarray]:
    hidden = np.maximum(x.astype(np.float64) @ weights["w1"] + weights["b1"], 0)
    return np.argmax(hidden @ weights["w2"] + weights["b2"], axis=1).tolist(), (hidden == 0).mean(axis=1)


class Store:
    """A store of its own, with the toy kind: ``register(seed)`` adds a version and returns its tag."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {"BENTOML_HOME": str(root / "store"), "MODEL_KINDS": "tests.toy_kind"}
        self.calibration = root / "cal.npy"
        np.save(self.calibration, np.random.default_rng(9).random((120, 4)).astype(np.float32))
        self.weights: dict[str, dict] = {}

    def register(self, seed: int, name: str = "toy") -> str:
        path = self.root / f"{name}-{seed}.npz"
        np.savez(path, **weights_of(seed))
        args = [
            "register",
            str(path),
            "--name",
            name,
            "--calibration",
            str(self.calibration),
            "--input-range",
            "0",
            "1",
        ]
        done = run_in_project([sys.executable, "-m", "modelstore", *args], env=self.env)
        assert done.returncode == 0, done.stderr[-2000:]
        tag = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("registered "))
        tag = tag.rstrip(":")
        self.weights[tag] = weights_of(seed)
        return tag


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    store = Store(root)
    first = store.register(1)
    (root / "inference.keys").write_text(f"{INFERENCE_KEY}\n")
    (root / "management.keys").write_text(f"# operators\n{MANAGEMENT_KEY}\n")
    env = store.env | {
        "INFERENCE_KEY_FILE": str(root / "inference.keys"),
        "MANAGEMENT_KEY_FILE": str(root / "management.keys"),
    }
    server = Server(root / "serve.log", workers=2, env=env)
    try:
        server.wait_ready()
        yield {"server": server, "store": store, "first": first, "root": root}
    finally:
        server.stop()


def _key(key: str = INFERENCE_KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _manage(url: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v2/repository/{path}", json=body or {}, headers=_key(MANAGEMENT_KEY), timeout=180)


def _answers_on_fresh_connections(url: str, count: int, path: str = "/v2/models/toy/infer") -> list[dict]:
    """``count`` answers, each on a new connection (so both workers answer some)."""
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4], "data": X.ravel().tolist()}]}
    answers = []
    for _ in range(count):
        with httpx.Client(headers=_key() | {"Connection": "close"}, timeout=30) as client:
            response = client.post(url + path, json=body)
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers


def _output(answer: dict, name: str) -> list:
    return next(o for o in answer["outputs"] if o["name"] == name)["data"]


def test_the_protocols_own_clients_work_unmodified(live, tmp_path):
    assert CLIENTS_PYTHON.exists(), "the clients' venv is missing: make setup-dev makes .venv-clients"
    url = live["server"].url
    np.save(tmp_path / "x.npy", X)
    done = subprocess.run(
        [str(CLIENTS_PYTHON), str(ROOT / "tests" / "oip_clients.py"), url, "toy", str(tmp_path / "x.npy"),
         str(tmp_path / "out.json"), INFERENCE_KEY, MANAGEMENT_KEY],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads((tmp_path / "out.json").read_text())
    served = httpx.post(f"{url}/models/toy/predict", json={"inputs": X.tolist()}, headers=_key(), timeout=30).json()
    labels = [p["label"] for p in served["predictions"]]
    zeros = [p["sparsity"]["layers"]["hidden"] for p in served["predictions"]]
    probabilities = [p["probabilities"] for p in served["predictions"]]
    triton, kserve = found["triton"], found["kserve"]
    assert triton["live"] and triton["ready"] and triton["model_ready"] and triton["loaded"]
    assert triton["server"]["extensions"][:2] == ["model_repository", "binary_tensor_data"]
    assert triton["metadata"]["versions"] == [served["model"].split(":")[1]]
    assert triton["metadata"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    for outputs in (triton["binary"], kserve["json"], kserve["binary"]):
        assert outputs["label"] == labels
        np.testing.assert_allclose(np.array(outputs["sparsity"])[:, 0], zeros, rtol=1e-6)
        np.testing.assert_allclose(outputs["probabilities"], probabilities, rtol=1e-5, atol=1e-7)
        assert set(outputs) == {
            "probabilities",
            "label",
            "sparsity",
            "sparsity_overall",
            "typicality_score",
            "atypical",
        }
    assert triton["binary_id"] == "triton-1" and kserve["id_True"] == "kserve-True"
    assert set(triton["asked"]) == {"label", "units/hidden"} and triton["asked"]["label"] == labels
    units = httpx.post(
        f"{url}/models/toy/predict?detail=units", json={"inputs": X.tolist()}, headers=_key(), timeout=30
    )
    np.testing.assert_allclose(
        triton["asked"]["units/hidden"], [p["units"]["hidden"] for p in units.json()["predictions"]], atol=1e-4
    )
    assert "401" in triton["without_key"]
    assert kserve["live"] and kserve["ready"] and kserve["model_ready"]
    assert {(e["name"], e["state"]) for e in triton["index"]} == {("toy", "READY")}


def test_a_new_version_is_loaded_in_every_worker_and_replaces_the_old(live):
    url, store = live["server"].url, live["store"]
    second = store.register(2)
    labels, _ = expected(store.weights[second], X)
    started = time.monotonic()
    loaded = _manage(url, "models/toy/load")
    seconds = time.monotonic() - started
    assert loaded.status_code == 200, loaded.text
    answers = _answers_on_fresh_connections(url, 30)
    assert {a["model_version"] for a in answers} == {second.split(":")[1]}
    assert all(_output(a, "label") == labels for a in answers)
    index = {(e["version"], e["state"]) for e in _manage(url, "index").json()}
    assert (second.split(":")[1], "READY") in index and (live["first"].split(":")[1], "UNAVAILABLE") in index
    assert seconds < 10, seconds
    log = live["server"].log_text()
    assert f"worker 1 loaded {second}" in log and f"worker 2 loaded {second}" in log


def test_a_version_that_does_not_reproduce_its_card_is_refused_and_the_old_serves_on(live):
    url, store = live["server"].url, live["store"]
    serving = httpx.get(f"{url}/v2/models/toy", headers=_key(), timeout=10).json()["versions"]
    third = store.register(3)
    name, version = third.split(":")
    weights = store.root / "store" / "models" / name / version / "model.npz"
    tampered = weights_of(3)
    tampered["b1"] = tampered["b1"] + 5.0  # every hidden unit on: the replay's zero counts change
    np.savez(weights, **tampered)
    refused = _manage(url, "models/toy/load", {"parameters": {"version": version}})
    assert refused.status_code == 400 and "exact zeros on the card's" in refused.json()["error"], refused.text
    assert "\n" not in refused.json()["error"]
    assert httpx.get(f"{url}/v2/models/toy", headers=_key(), timeout=10).json()["versions"] == serving
    answers = _answers_on_fresh_connections(url, 10)
    assert {a["model_version"] for a in answers} == set(serving)
    missing = _manage(url, "models/nothing/load")
    assert missing.status_code == 404 and missing.json()["error"] == "model nothing:latest is not in the store"


def test_two_versions_serve_side_by_side_and_an_unloaded_one_leaves_the_metrics(live):
    url, first = live["server"].url, live["first"]
    old = first.split(":")[1]
    live["store"].register(4)
    assert _manage(url, "models/toy/load").status_code == 200  # the newest alone (whatever ran before)
    assert _manage(url, "models/toy/load", {"parameters": {"version": old}}).status_code == 200
    versions = httpx.get(f"{url}/v2/models/toy", headers=_key(), timeout=10).json()["versions"]
    assert len(versions) == 2 and versions[1] == old  # the newest first: it answers the name
    answer = _answers_on_fresh_connections(url, 4, f"/v2/models/toy/versions/{old}/infer")[0]
    assert answer["model_version"] == old and _output(answer, "label") == expected(live["store"].weights[first], X)[0]
    assert all(a["model_version"] == versions[0] for a in _answers_on_fresh_connections(url, 4))
    cards = httpx.get(f"{url}/models", headers=_key(), timeout=10).json()["models"]
    assert [c["tag"] for c in cards] == [f"toy:{v}" for v in versions]
    time.sleep(1.5)  # the per-unit counts are flushed every second
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert f'activation_samples_total{{model="toy",version="{old}"}}' in metrics
    assert _manage(url, "models/toy/unload", {"parameters": {"version": old}}).status_code == 200
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert f'version="{old}"' not in metrics and f'version="{versions[0]}"' in metrics
    gone = httpx.post(f"{url}/v2/models/toy/versions/{old}/infer", json={}, headers=_key(), timeout=10)
    assert gone.status_code == 404


def test_keys_guard_the_routes_and_rotate_without_a_restart(live):
    url, root = live["server"].url, live["root"]
    assert httpx.get(f"{url}/models", timeout=10).status_code == 401
    refused = httpx.post(f"{url}/models/toy/predict", json={"inputs": X.tolist()}, timeout=10)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{url}/models/toy/examples", headers=_key("wrong"), timeout=10).status_code == 401
    # the key before any other check: a keyless body of the wrong type gets 401, with the key 415
    plain = {"content-type": "text/plain"}
    assert httpx.post(f"{url}/models/toy/predict_batch", content=b"x", headers=plain, timeout=10).status_code == 401
    keyed = httpx.post(f"{url}/models/toy/predict_batch", content=b"x", headers={**plain, **_key()}, timeout=10)
    assert keyed.status_code == 415
    for path in ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(url + path, timeout=10).status_code == 200, path
    assert _manage(url, "index").status_code == 200
    inference_for_management = httpx.post(f"{url}/v2/repository/index", headers=_key(), timeout=10)
    assert inference_for_management.status_code == 401
    (root / "inference.keys").write_text("rotated-key\n")
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/models", headers=_key("rotated-key"), timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the rotated key was not accepted within 10 s"
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/models", headers=_key(), timeout=10).status_code != 401:  # each worker re-reads it
        assert time.monotonic() < deadline
        time.sleep(0.2)
    (root / "inference.keys").write_text(f"{INFERENCE_KEY}\n")
    time.sleep(1.5)


def test_paths_that_match_no_route_add_no_series(live):
    url = live["server"].url

    def series() -> set[str]:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        return {line.split(" ")[0] for line in text.splitlines() if line.startswith("bentoml_service_request_total")}

    with httpx.Client(timeout=10) as client:
        client.get(f"{url}/no/such/path/warm-up")
        before = series()
        for i in range(300):
            client.get(f"{url}/random/{i}/{np.random.default_rng(i).integers(1 << 30)}")
            client.post(f"{url}/v2/models/toy{i}/infer", json={}, headers=_key())
    after = series()
    assert len(after - before) <= 1, sorted(after - before)  # at most the 404 of the model route's template
    assert all("/random/" not in s for s in after) and all("toy1" not in s for s in after)


def test_the_poll_mode_loads_a_new_version_without_a_request(live, tmp_path):
    store = live["store"]
    first = store.register(11, name="polled")
    server = Server(tmp_path / "poll.log", env=store.env | {"MODEL_POLL_SECONDS": "0.5", "SERVED_MODELS": "polled"})
    try:
        server.wait_ready()
        second = store.register(12, name="polled")
        deadline = time.monotonic() + 30
        while True:
            versions = httpx.get(f"{server.url}/v2/models/polled", timeout=10).json()["versions"]
            if versions == [second.split(":")[1]]:
                break
            assert time.monotonic() < deadline, versions
            time.sleep(0.2)
        answer = httpx.post(f"{server.url}/models/polled/predict", json={"inputs": X.tolist()}, timeout=10).json()
        assert [p["label"] for p in answer["predictions"]] == expected(store.weights[second], X)[0]
        assert first != second and f"poll: now serving {second}" in server.log_text()
        off = httpx.post(f"{server.url}/v2/repository/index", timeout=10)
        assert off.status_code == 403 and "MANAGEMENT_KEY_FILE" in off.json()["error"]
    finally:
        server.stop()


def test_the_page_asks_for_the_inference_key_and_then_shows_the_models(live, browser):
    from selenium.webdriver.common.by import By

    browser.get(live["server"].url + "/ui")
    wait_for(browser, "!document.getElementById('key-form').hidden")
    assert "could not list the models" in browser.find_element(By.ID, "error").text
    browser.save_screenshot(str(SCREENSHOTS / "key-prompt.png"))
    browser.find_element(By.ID, "key-input").send_keys(INFERENCE_KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_for(browser, "document.body.dataset.ready === 'true'")
    options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#model-select option")]
    assert options == ["toy"]  # one entry per name, whatever versions serve
    assert browser.find_element(By.ID, "key-form").get_attribute("hidden") is not None
    browser.execute_script("sessionStorage.clear()")


def test_hostile_authorization_headers_on_a_real_server(live):
    url = live["server"].url
    body = {"inputs": X.tolist()}
    cases = [
        ([("Authorization", "")], "the Authorization scheme must be Bearer"),
        ([("Authorization", "Bearer " + "k" * 6000)], "over 4096 bytes"),
        ([("Authorization", f"Bearer {INFERENCE_KEY}"), ("Authorization", f"Bearer {INFERENCE_KEY}")], "send one"),
        ([("Authorization", f"Basic {INFERENCE_KEY}")], "the Authorization scheme must be Bearer"),
        ([("Authorization", f"bearer   {INFERENCE_KEY}")], None),  # the scheme in any case, spaces before the key
    ]
    for headers, problem in cases:
        response = httpx.post(f"{url}/models/toy/predict", json=body, headers=headers, timeout=10)
        if problem is None:
            assert response.status_code == 200, response.text
            continue
        assert response.status_code == 401 and problem in response.json()["error"], (headers[0][1][:20], response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{url}/livez", timeout=10).status_code == 200  # the server is unharmed


def test_two_versions_of_a_name_can_be_served_from_the_start(live, tmp_path):
    store = live["store"]
    tags = [t for t in store.weights if t.startswith("toy:")][:2]
    server = Server(tmp_path / "two.log", env=store.env | {"SERVED_MODELS": ",".join(tags)})
    try:
        server.wait_ready()
        versions = httpx.get(f"{server.url}/v2/models/toy", timeout=10).json()["versions"]
        assert sorted(versions) == sorted(t.split(":")[1] for t in tags)
        for tag in tags:
            version = tag.split(":")[1]
            answer = httpx.post(
                f"{server.url}/v2/models/toy/versions/{version}/infer",
                json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4], "data": X.ravel().tolist()}]},
                timeout=10,
            ).json()
            assert answer["model_version"] == version and _output(answer, "label") == expected(store.weights[tag], X)[0]
    finally:
        server.stop()
