"""The prediction log on a real two-worker ``bentoml serve``, the same suite on SQLite (the default) and on a real
PostgreSQL server: every answered item is logged with what the answer said; the log routes filter, page, show an
input (which, sent again, answers as it did) and take a reviewer's label under the management key; hostile
queries get 4xx with one line; the drift windows close and are exported; and the way back to training: the
reviewed items exported, a version trained with them, registered, shadowed on live traffic and compared."""

from __future__ import annotations

import json
import sys
import time

import httpx
import numpy as np
import pytest

from benchmarks.server import Server
from tests.tools import run_in_project

pytestmark = [pytest.mark.slow, pytest.mark.integration]
INFERENCE_KEY, MANAGEMENT_KEY = "inference-key-log", "management-key-log"
WINDOW = 50


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.system)])
def logged(request, trained, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"log-{request.param}")
    (root / "inference.keys").write_text(f"{INFERENCE_KEY}\n")
    (root / "management.keys").write_text(f"{MANAGEMENT_KEY}\n")
    if request.param == "postgresql":
        from benchmarks.postgres import postgres_server

        context = postgres_server()
        where = context.__enter__()
    else:
        context, where = None, str(root / "log.sqlite3")
    env = {
        "SERVED_MODELS": "mnist_cnn,iris_l1",
        "PREDICTION_LOG_URL": where,
        "DRIFT_WINDOW": str(WINDOW),
        "INFERENCE_KEY_FILE": str(root / "inference.keys"),
        "MANAGEMENT_KEY_FILE": str(root / "management.keys"),
    }
    server = Server(root / "serve.log", workers=2, env=env)
    try:
        server.wait_ready()
        yield {"url": server.url, "where": where, "root": root, "kind": request.param}
    finally:
        server.stop()
        if context is not None:
            context.__exit__(None, None, None)


def _get(url: str, path: str, key: str = INFERENCE_KEY, **params) -> httpx.Response:
    return httpx.get(url + path, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _predict(url: str, x: np.ndarray, request_id: str) -> dict:
    with httpx.Client(headers={"Authorization": f"Bearer {INFERENCE_KEY}", "Connection": "close"}) as client:
        answer = client.post(f"{url}/models/mnist_cnn/predict", json={"inputs": x.tolist()},
                             headers={"X-Request-ID": request_id}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


def _rows(url: str, want: int, **params) -> list[dict]:
    """Every row of mnist_cnn matching ``params``, once at least ``want`` are there (the writer flushes every
    half second)."""
    deadline = time.monotonic() + 20
    while True:
        rows, cursor = [], None
        while True:
            page = _get(url, "/models/mnist_cnn/log", limit="100", **params, **({"cursor": cursor} if cursor else {}))
            assert page.status_code == 200, page.text
            rows += page.json()["rows"]
            cursor = page.json()["next"]
            if cursor is None:
                break
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_every_answered_item_is_logged_with_what_its_answer_said(logged, test_images):
    url = logged["url"]
    x = test_images[0][:40]
    strange = np.random.default_rng(0).uniform(0, 1, (4, 28, 28)).astype(np.float32)  # noise: atypical
    answers = {}
    for k in range(0, 40, 4):
        answers[f"digits-{k}"] = (x[k : k + 4], _predict(url, x[k : k + 4], f"digits-{k}"))
    answers["noise"] = (strange, _predict(url, strange, "noise"))
    rows = _rows(url, 44)
    assert len(rows) == 44
    by_request = {(r["request_id"], r["item"]): r for r in rows}
    for request_id, (_, answer) in answers.items():
        for item, predicted in enumerate(answer["predictions"]):
            row = by_request[(request_id, item)]
            assert row["label"] == predicted["name"] and row["role"] == "primary"
            assert row["atypical"] == predicted["typicality"]["atypical"]
            assert row["typicality_score"] == pytest.approx(predicted["typicality"]["score"], rel=1e-9)
            assert row["layer_sparsity"] == pytest.approx(predicted["sparsity"]["layers"], rel=1e-9)
            assert row["top_probability"] == pytest.approx(max(predicted["probabilities"]), rel=1e-9)
            assert row["has_input"] == row["atypical"] and row["route"] == "/models/{name}/predict"
    atypical = _rows(url, 1, atypical="true")
    assert atypical and all(r["atypical"] for r in atypical)
    assert {r["request_id"] for r in atypical} >= {"noise"}


def test_a_logged_input_answers_again_as_it_did(logged):
    url = logged["url"]
    row = _rows(url, 1, atypical="true")[0]
    full = _get(url, f"/models/mnist_cnn/log/{row['id']}").json()
    assert full["input"] is not None and np.asarray(full["input"]).shape == (28, 28)
    again = _predict(url, np.asarray([full["input"]], dtype=np.float32), "replay")["predictions"][0]
    assert again["name"] == row["label"] and again["typicality"]["score"] == pytest.approx(row["typicality_score"])


def test_a_review_needs_the_management_key_and_is_stored(logged):
    url = logged["url"]
    row = _rows(url, 1, atypical="true")[0]
    path = f"{url}/models/mnist_cnn/log/{row['id']}/review"

    def put(body, key=MANAGEMENT_KEY):
        return httpx.put(path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    assert httpx.put(path, json={"label": "7"}, timeout=30).status_code == 401
    assert put({"label": "7"}, INFERENCE_KEY).status_code in (401, 403)
    bad = put({"label": "seven"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("label:")
    assert put({"label": "7", "more": 1}).status_code == 400
    missing = httpx.put(f"{url}/models/mnist_cnn/log/999999999/review", json={"label": "7"},
                        headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=30)  # fmt: skip
    assert missing.status_code == 404
    done = put({"label": "7"})
    assert done.status_code == 200 and done.json()["review"]["label"] == "7"
    assert _get(url, f"/models/mnist_cnn/log/{row['id']}").json()["review"]["label"] == "7"
    assert row["id"] in {r["id"] for r in _rows(url, 1, reviewed="true")}


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/models/mnist_cnn/log", {"limit": "100000"}, 400, "limit"),
        ("/models/mnist_cnn/log", {"since": "'; DROP TABLE predictions; --"}, 400, "since"),
        ("/models/mnist_cnn/log", {"version": "x' OR '1'='1"}, 400, "version"),
        ("/models/mnist_cnn/log", {"label": "1 OR 1=1"}, 400, "label"),
        ("/models/mnist_cnn/log", {"role": "admin'--"}, 400, "role"),
        ("/models/mnist_cnn/log", {"atypical": "1; DELETE FROM predictions"}, 400, "atypical"),
        ("/models/mnist_cnn/log", {"cursor": "-1"}, 400, "cursor"),
        ("/models/mnist_cnn/log", {"order by id": "1"}, 400, "query"),
        ("/models/mnist_cnn/log/1%20OR%201=1", {}, 400, "id"),
        ("/models/mnist_cnn/log/1", {"x": "y"}, 400, "query"),
        ("/models/no_such_model/log", {}, 404, "model"),
    ],
)
def test_hostile_queries_get_a_4xx_with_one_line(logged, path, params, status, field):
    answer = _get(logged["url"], path, **params)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"].startswith(f"{field}:") and "\n" not in answer.json()["error"]
    assert _get(logged["url"], "/models/mnist_cnn/log").json()["rows"]  # the table is still there


def test_the_log_routes_need_the_inference_key(logged):
    assert httpx.get(logged["url"] + "/models/mnist_cnn/log", timeout=30).status_code == 401


def test_drift_windows_close_and_are_exported(logged, test_images):
    url = logged["url"]
    for k in range(0, 200, 20):
        _predict(url, test_images[0][100 + k : 120 + k], f"drift-{k}")
    deadline = time.monotonic() + 20
    while True:
        drift = _get(url, "/models/mnist_cnn/drift").json()
        (version,) = drift["versions"]
        if sum(version["windows"].values()) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert version["baseline"] is True and version["window"] == WINDOW
    assert sum(version["windows"].values()) >= 2
    assert {"conv1", "typicality_score"} <= set(version["psi"])
    metrics = httpx.get(url + "/metrics", timeout=30).text
    assert 'model_drift_psi{model="mnist_cnn"' in metrics and "prediction_log_rows_total" in metrics


def test_reviewed_items_go_back_to_training_and_the_new_version_is_shadowed_and_compared(logged, test_images):
    url, root = logged["url"], logged["root"]
    _predict(url, np.random.default_rng(11).uniform(0, 1, (3, 28, 28)).astype(np.float32), "to-review")
    _rows(url, 3, atypical="true", reviewed="false")
    kept = [r for r in _rows(url, 1, atypical="true") if r["review"] is None][:3]
    for row in kept:
        answer = httpx.put(f"{url}/models/mnist_cnn/log/{row['id']}/review", json={"label": "3"},
                           headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text
    out = root / "reviewed.npz"
    done = run_in_project([sys.executable, "-m", "modelstore", "dataset", "mnist_cnn", "--reviewed", "--log",
                           logged["where"], "--out", str(out)])  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    exported = np.load(out)
    assert len(exported["y"]) >= len(kept) and exported["x"].shape[1:] == (28, 28)
    assert int(np.sum(exported["y"] == 3)) >= len(kept) and set(exported["ids"].tolist()) >= {r["id"] for r in kept}
    reports = root / "reports"
    trained = run_in_project([sys.executable, "-m", "training", "mnist", "--dataset", "mnist-5k", "--epochs", "1",
                              "--limit", "500", "--extra", str(out), "--quiet", "--report-dir", str(reports)],
                             timeout=600)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads((reports / "mnist_cnn.json").read_text())
    assert report["provenance"]["extra"]["items"] == len(exported["y"])
    tag = report["tag"]
    version = tag.split(":")[1]
    shadow = httpx.put(f"{url}/models/mnist_cnn/shadow", json={"version": version, "share": 1.0},
                       headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=180)  # fmt: skip
    assert shadow.status_code == 200, shadow.text
    for k in range(0, 40, 8):
        _predict(url, test_images[0][300 + k : 308 + k], f"shadowed-{k}")
    deadline = time.monotonic() + 30
    while True:
        compared = _get(url, "/models/mnist_cnn/shadow").json()
        if compared["inputs"]["compared"] >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert compared["candidate"] == version and compared["inputs"]["compared"] >= 40
    shadowed = _rows(url, 40, role="shadow")  # the shadow process logs the candidate's answers too
    assert len(shadowed) >= 40 and {r["version"] for r in shadowed} == {version}
    assert 0 <= compared["comparison"]["label_agreement"]["share"] <= 1
    removed = httpx.delete(f"{url}/models/mnist_cnn/shadow", headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"},
                           timeout=180)  # fmt: skip
    assert removed.status_code == 200
    # the later tests serve the same store: the new version goes
    gone = run_in_project([sys.executable, "-m", "bentoml", "models", "delete", tag, "-y"])
    assert gone.returncode == 0, gone.stderr[-2000:]


def test_the_page_shows_the_stored_atypical_inputs_replays_one_and_labels_it(logged, browser):
    """The review view of /ui in Chromium: the stored atypical inputs listed, one clicked shows the full
    introspection of that input (as the API answers it), and a label saved with the management key."""
    from tests.integration.test_page import SCREENSHOTS, settled, shown, wait_for

    if logged["kind"] != "sqlite":
        pytest.skip("the page reads the log through the API: one database is enough")
    url = logged["url"]
    noise = np.random.default_rng(7).uniform(0, 1, (3, 28, 28)).astype(np.float32)
    _predict(url, noise, "for-the-page")
    deadline = time.monotonic() + 20
    while True:  # these rows written (the writer flushes every half second) before the page reads the log
        newest = _get(url, "/models/mnist_cnn/log", atypical="true", limit="10").json()["rows"]
        if any(r["request_id"] == "for-the-page" for r in newest) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert any(r["request_id"] == "for-the-page" and r["has_input"] for r in newest)
    browser.get(url + "/ui")
    browser.execute_script(f"sessionStorage.setItem('sparsity-inference-key', '{INFERENCE_KEY}')")
    browser.get(url + "/ui")
    wait_for(browser, "document.body.dataset.ready === 'true'")
    wait_for(browser, "document.querySelectorAll('#review-list button').length > 0")
    listed = browser.execute_script(
        "return [...document.querySelectorAll('#review-list button')].map(b => +b.dataset.id)"
    )
    assert listed[0] == max(r["id"] for r in _rows(url, 1, atypical="true") if r["has_input"])
    before = int(browser.execute_script("return Number(document.body.dataset.answers || 0)"))
    browser.find_element("css selector", f"#review-list button[data-id='{listed[0]}']").click()
    settled(browser, before)
    row = _get(url, f"/models/mnist_cnn/log/{listed[0]}").json()
    page = shown(browser)
    assert page["atypical"] is True and page["layers"] == pytest.approx(row["layer_sparsity"], abs=1e-9)
    assert str(page["label"]) == row["label"]
    browser.find_element("id", "review-key").send_keys(MANAGEMENT_KEY)
    browser.execute_script("document.getElementById('review-label').value = '5'")
    browser.find_element("id", "review-save").click()
    wait_for(browser, "document.getElementById('review-status').textContent.startsWith('labelled 5')")
    assert _get(url, f"/models/mnist_cnn/log/{listed[0]}").json()["review"]["label"] == "5"
    drift = browser.find_element("id", "drift").text
    (version,) = _get(url, "/models/mnist_cnn/drift").json()["versions"]
    assert drift.startswith(version["version"]) and ("drifted" in drift or "no drift" in drift), drift
    browser.save_screenshot(str(SCREENSHOTS / "review.png"))
