"""The HTTP API against a real ``bentoml serve`` process."""

from __future__ import annotations

import io
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.codecs.pictures import image_to_mnist
from tests.helpers import NPY, npy_bytes, png_bytes, unit_firing_scores
from tests.tools import run_in_project

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def post_json(server, path: str, payload, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=payload, timeout=60, **kwargs)


def post_raw(server, path: str, body: bytes | str, content_type="application/json") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=body, headers={"content-type": content_type}, timeout=60)


def assert_ratio(value) -> None:
    assert isinstance(value, float) and 0.0 <= value <= 1.0


def test_readyz_answers_only_after_loading(server):
    assert server.readyz_seen[-1] == 200
    assert any(status != 200 for status in server.readyz_seen[:-1]), server.readyz_seen
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_mnist_predict_happy_path_matches_an_independent_recomputation(server, reference, test_images):
    images = test_images[0][:5]
    r = post_json(server, "/mnist/predict", {"images": images.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = reference(images)
    assert body["model"] == expected["tag"]
    assert len(body["predictions"]) == 5
    for i, item in enumerate(body["predictions"]):
        assert item["label"] == int(np.argmax(expected["probabilities"][i]))
        np.testing.assert_allclose(item["probabilities"], expected["probabilities"][i], atol=1e-5)
        assert sum(item["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert list(item["sparsity"]["layers"]) == ["conv1", "conv2", "dense"]
        for layer, value in item["sparsity"]["layers"].items():
            assert_ratio(value)
            assert value == pytest.approx(expected["layers"][layer][i], abs=1e-6)
        assert item["sparsity"]["overall"] == pytest.approx(expected["overall"][i], abs=1e-6)


def test_typicality_of_each_input_is_its_score_against_the_stored_calibration(server, trained, reference, test_images):
    """Independent recomputation: each image's per-unit firing shares from Keras' own layer outputs, scored
    with the detector state saved at registration, flagged above the stored threshold."""
    import bentoml

    calibration = trained["mnist"]["typicality"]
    assert calibration["detector"] == "unit-firing"
    images = np.concatenate([test_images[0][:6], np.zeros((1, 28, 28)), 1.0 - test_images[0][:3]])
    r = post_json(server, "/mnist/predict", {"images": images.tolist()})
    assert r.status_code == 200, r.text
    expected = reference(images)
    state = bentoml.models.get(expected["tag"]).path_of(calibration["state_file"])
    scores = unit_firing_scores(expected["shares"], state, calibration["features"])
    for item, score in zip(r.json()["predictions"], scores, strict=True):
        assert item["typicality"]["score"] == pytest.approx(score, rel=1e-4, abs=1e-4)
        assert item["typicality"]["atypical"] is bool(score > calibration["threshold"])
    assert r.json()["predictions"][6]["typicality"]["atypical"] is True  # a blank image is never typical


def test_near_misses_from_the_projects_letters_are_scored_as_offline_and_flagged(server, trained, reference, letters):
    """Letters A-J from the installed fonts (the study's near set), served: the scores equal the offline
    recomputation, and letters are flagged far more often than unseen digits are (1% by calibration)."""
    import bentoml

    calibration = trained["mnist"]["typicality"]
    chosen = letters[np.random.default_rng(0).choice(len(letters), 120, replace=False)]
    r = httpx.post(f"{server.url}/models/mnist_cnn/predict_batch", content=npy_bytes(chosen), headers=NPY, timeout=60)
    assert r.status_code == 200, r.text
    expected = reference(chosen)
    state = bentoml.models.get(expected["tag"]).path_of(calibration["state_file"])
    offline = unit_firing_scores(expected["shares"], state, calibration["features"])
    served = np.array([item["typicality"]["score"] for item in r.json()["predictions"]])
    np.testing.assert_allclose(served, offline, rtol=1e-4, atol=1e-4)
    flagged = np.array([item["typicality"]["atypical"] for item in r.json()["predictions"]])
    assert flagged.mean() >= 0.2, f"{flagged.mean():.0%} of letters flagged"


def test_iris_typicality_flags_a_flower_unlike_any_training_row(server):
    r = post_json(server, "/iris/predict", {"features": [[5.1, 3.5, 1.4, 0.2], [5.0, 9.0, 1.0, 6.0]]})
    assert r.status_code == 200, r.text
    typical, odd = (item["typicality"] for item in r.json()["predictions"])
    assert typical["atypical"] is False and odd["atypical"] is True
    assert odd["score"] > 3 * typical["score"]


def test_mnist_predict_image_happy_path(server, reference, test_images):
    digit = test_images[0][7]
    data = png_bytes(digit)
    r = httpx.post(f"{server.url}/mnist/predict_image", files={"image": ("digit.png", data, "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    (item,) = r.json()["predictions"]
    expected = reference(image_to_mnist(data, 10**7)[None])
    assert item["label"] == int(np.argmax(expected["probabilities"][0]))
    assert item["sparsity"]["overall"] == pytest.approx(expected["overall"][0], abs=1e-6)


def test_upload_format_comes_from_the_bytes_not_the_part_content_type(server, test_images):
    data = png_bytes(test_images[0][3])
    r = httpx.post(
        f"{server.url}/mnist/predict_image", files={"image": ("digit", data, "application/octet-stream")}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 1


def test_iris_predict_happy_path(server, trained):
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [0, 0, 0, 0]]
    r = post_json(server, "/iris/predict", {"features": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == trained["iris"]["tag"]
    first, second, _ = body["predictions"]
    assert (first["label"], first["name"]) == (0, "setosa")
    assert (second["label"], second["name"]) == (2, "virginica")
    coef = np.asarray(trained["iris"]["coefficients"])
    for item in body["predictions"]:
        assert len(item["probabilities"]) == 3
        assert item["sparsity"]["weights"] == float(np.mean(coef == 0))
        assert_ratio(item["sparsity"]["contributions"])
        assert item["sparsity"]["contributions"] >= item["sparsity"]["weights"]


def test_models_endpoint_reports_what_the_store_recorded(server, trained):
    r = httpx.get(f"{server.url}/models", timeout=10)
    assert r.status_code == 200
    by_name = {model["name"]: model for model in r.json()["models"]}
    mnist, iris = by_name["mnist_cnn"], by_name["iris_l1"]
    assert mnist["tag"] == trained["mnist"]["tag"] and iris["tag"] == trained["iris"]["tag"]
    assert mnist["test_accuracy"] == trained["mnist"]["test_accuracy"]
    assert [l["name"] for l in mnist["relu_layers"]] == ["conv1", "conv2", "dense"]
    assert mnist["activation_sparsity"] == trained["mnist"]["activation_sparsity"]
    for model in (mnist, iris):  # the typicality calibration: false-alarm rate, threshold, on which data
        calibration = model["typicality"]
        assert calibration["false_alarm_rate"] == 0.01 and calibration["threshold"] > 0
        assert calibration["calibration"] and calibration["calibration_size"] > 0
        assert 0.0 <= calibration["measured_false_alarm_rate"] <= 1.0
    assert iris["weight_sparsity"] == trained["iris"]["weight_sparsity"]


def test_openapi_lists_the_endpoints(server):
    paths = httpx.get(f"{server.url}/docs.json", timeout=10).json()["paths"]
    assert {"/mnist/predict", "/mnist/predict_image", "/iris/predict"} <= set(paths)
    assert httpx.get(f"{server.url}/docs", timeout=10, follow_redirects=True).status_code == 200


def _image(value=0.0, rows=28, cols=28):
    return [[value] * cols for _ in range(rows)]


BAD_MNIST = {
    "27x28": ({"images": [_image(rows=27)]}, "images[0]"),
    "28x27": ({"images": [_image(cols=27)]}, "images[0][0]"),
    "flat-784": ({"images": [[0.0] * 784]}, "images[0][0]"),
    "3-d-per-image": ({"images": [[[[0.0]] * 28] * 28]}, "images[0][0][0]"),
    "string": ({"images": [[["0.5"] * 28, *_image(rows=27)]]}, "images[0][0][0]"),
    "boolean": ({"images": [[[True] * 28, *_image(rows=27)]]}, "images[0][0][0]"),
    "above-1": ({"images": [[*_image(0.5)[:27], [0.5] * 27 + [255.0]]]}, "images[0][27][27]"),
    "negative": ({"images": [_image(-0.1)]}, "images[0][0][0]"),
    "n-0": ({"images": []}, "images"),
    "n-1025": ({"images": [_image()] * 1025}, "images"),
    "missing-field": ({"pictures": [_image()]}, "images"),
    "null": ({"images": None}, "images"),
}


@pytest.mark.parametrize("case", list(BAD_MNIST))
def test_bad_mnist_json_gets_400_naming_the_field(server, case):
    payload, field = BAD_MNIST[case]
    r = post_json(server, "/mnist/predict", payload)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"].startswith(field + ":"), body
    assert body["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            '{"images": [[[NaN' + ", 0" * 27 + "]" + (", [" + ", ".join(["0"] * 28) + "]") * 27 + "]]}",
            "images[0][0][0]",
        ),
        (
            '{"images": [[[Infinity' + ", 0" * 27 + "]" + (", [" + ", ".join(["0"] * 28) + "]") * 27 + "]]}",
            "images[0][0][0]",
        ),
        ("this is not json", "body"),
        ("", "images"),
    ],
    ids=["nan", "infinity", "not-json", "empty-body"],
)
def test_bad_raw_bodies_get_400(server, body, field):
    r = post_raw(server, "/mnist/predict", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field + ":")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"features": [[5.1, 3.5, 1.4]]}, "features[0]"),
        ({"features": [[5.1, 3.5, 1.4, "x"]]}, "features[0][3]"),
        ({"features": [[5.1, 3.5, 1.4, False]]}, "features[0][3]"),
        ({"features": []}, "features"),
        ({"features": [[1, 2, 3, 4]] * 1025}, "features"),
        ({"rows": [[1, 2, 3, 4]]}, "features"),
        ({"features": [[1e308, 1e308, 1e308, 1e308]]}, "features[0][0]"),  # would overflow the model
        ({"features": [[5.1, 3.5, -2e6, 0.2]]}, "features[0][2]"),
    ],
)
def test_bad_iris_json_gets_400(server, payload, field):
    r = post_json(server, "/iris/predict", payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field + ":")


def test_iris_nan_gets_400(server):
    r = post_raw(server, "/iris/predict", '{"features": [[1, 2, 3, NaN]]}')
    assert r.status_code == 400 and r.json()["error"].startswith("features[0][3]:")


def test_oversize_body_gets_413(server):
    r = post_raw(server, "/mnist/predict", b" " * (16 * 1024 * 1024 + 1))
    assert r.status_code == 413
    assert r.json()["error"].startswith("body: request body exceeds the limit of 16777216 bytes")


def test_oversize_chunked_body_without_length_gets_413(server):
    def chunks():
        for _ in range(17):
            yield b" " * (1024 * 1024)

    r = httpx.post(
        f"{server.url}/mnist/predict", content=chunks(), headers={"content-type": "application/json"}, timeout=60
    )
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/mnist/predict", "text/plain"),
        ("/iris/predict", "application/x-www-form-urlencoded"),
        ("/mnist/predict_image", "application/json"),
    ],
)
def test_wrong_content_type_gets_415(server, path, content_type):
    r = post_raw(server, path, "{}", content_type=content_type)
    assert r.status_code == 415
    assert r.json()["error"].startswith("Content-Type: must be ")


def _truncated_png() -> bytes:
    noise = np.random.default_rng(0).random((64, 64))
    data = png_bytes(noise, scale=1)
    return data[: len(data) // 2]


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000), 0).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a definitely not a png", "PNG or JPEG"),
        (_truncated_png(), "could not be decoded"),
        (_bomb_png(), "exceed"),
        (png_bytes(np.zeros((28, 28))), "blank"),
    ],
    ids=["empty", "not-an-image", "truncated-png", "decompression-bomb", "blank"],
)
def test_bad_uploads_get_400(server, data, message):
    r = httpx.post(f"{server.url}/mnist/predict_image", files={"image": ("x.png", data, "image/png")}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error.startswith("image") and message in error


def test_missing_upload_field_gets_400(server):
    r = httpx.post(f"{server.url}/mnist/predict_image", files={"picture": ("x.png", b"x", "image/png")}, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"].startswith("image: Field required")


def test_text_value_instead_of_a_file_is_refused_not_fetched(server):
    # BentoML would treat the text as a URL to download; the guard refuses it with a 400
    r = httpx.post(f"{server.url}/mnist/predict_image", files={"image": (None, f"{server.url}/livez")}, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"].startswith("image: must be an uploaded file")


def test_malformed_multipart_gets_400(server):
    r = post_raw(server, "/mnist/predict_image", b"garbage", content_type="multipart/form-data; boundary=xyz")
    assert r.status_code == 400
    assert r.json()["error"].startswith("body: malformed multipart/form-data")


def test_service_keeps_serving_after_bad_input(server, test_images):
    for body in ("nope", '{"images": [[[NaN]]]}', ""):
        post_raw(server, "/mnist/predict", body)
    r = post_json(server, "/mnist/predict", {"images": test_images[0][:1].tolist()})
    assert r.status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_32_concurrent_requests_each_get_their_own_answer(server, reference, test_images):
    images = test_images[0][100:132]
    expected = reference(images)

    def one(i: int) -> dict:
        r = post_json(server, "/mnist/predict", {"images": images[i : i + 1].tolist()})
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(one, range(32)))
    for i, item in enumerate(answers):
        np.testing.assert_allclose(item["probabilities"], expected["probabilities"][i], atol=1e-5)
        assert item["sparsity"]["overall"] == pytest.approx(expected["overall"][i], abs=1e-6)
    # the inputs differ, so the answers must too
    assert len({json.dumps(a["sparsity"]) for a in answers}) > 16


def test_fuzzed_requests_get_only_the_answers_the_openapi_document_promises(server):
    """schemathesis generates valid and invalid requests from /docs.json (bounded in count and time): no
    5xx, and every status, Content-Type and body is one the document declares for that operation.
    .npy bodies for the batch route come from tests/integration/schemathesis_hooks.py."""
    tool = Path(sys.executable).parent / "schemathesis"
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    out = run_in_project(
        [
            str(tool),
            "run",
            f"{server.url}/docs.json",
            "--checks",
            checks,
            "--max-examples",
            "25",
            "--max-time",
            "60",
            "--suppress-health-check",
            "all",
            "--workers",
            "1",
            "--seed",
            "1",
        ],
        env={"SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks"},
    )
    summary = out.stdout.split("SUMMARY")[-1]
    assert out.returncode == 0, out.stdout[-4000:]
    # (the repository routes answer 403 here, no management key: schemathesis warns "Authentication failed")
    assert "passed" in summary and not re.search(r"\d+ failed", summary) and "Errors:" not in summary, summary
    document = httpx.get(f"{server.url}/docs.json", timeout=10).json()
    operations = sum(
        method in ("get", "post", "put", "patch", "delete", "head", "options")
        for item in document["paths"].values()
        for method in item
    )
    assert operations >= 14  # the aliases, every model's routes, the cards and examples, the infrastructure
    assert f"Tested: {operations}" in summary, summary  # every operation of the document


def post_npy(server, array: np.ndarray, **kwargs) -> httpx.Response:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return post_raw(server, "/mnist/predict_batch", buf.getvalue(), content_type="application/x-npy")


def test_npy_batch_answers_each_image_in_order_as_the_json_route_does(server, reference, test_images):
    images = test_images[0][200:240]
    pixels = np.rint(images * 255).astype(np.uint8)  # the uint8 form of the same digits
    r = post_npy(server, pixels)
    assert r.status_code == 200, r.text
    body = r.json()
    expected = reference(pixels.astype(np.float32) / 255)
    assert body["model"] == expected["tag"] and len(body["predictions"]) == 40
    for i, item in enumerate(body["predictions"]):
        np.testing.assert_allclose(item["probabilities"], expected["probabilities"][i], atol=1e-5)
        assert item["sparsity"]["overall"] == pytest.approx(expected["overall"][i], abs=1e-6)
        for layer, value in item["sparsity"]["layers"].items():
            assert value == pytest.approx(expected["layers"][layer][i], abs=1e-6)
    as_json = post_json(server, "/mnist/predict", {"images": (pixels.astype(np.float32) / 255).tolist()})
    assert as_json.json() == body  # same figures, same shape, whichever route


def test_fast_and_fully_validated_json_paths_give_identical_answers(server, test_images):
    """A plain body takes the fast reader; an extra key sends the same images through BentoML's
    validation. The answers must be byte-for-byte the same data."""
    images = test_images[0][300:310].round(4).tolist()
    fast = post_json(server, "/mnist/predict", {"images": images})
    full = post_json(server, "/mnist/predict", {"images": images, "comment": "takes the validated path"})
    assert fast.status_code == full.status_code == 200
    assert fast.json() == full.json()


@pytest.mark.parametrize(
    ("array", "kwargs", "rule"),
    [
        (
            np.zeros((2, 28, 28), dtype=np.float64),
            {},
            "body: dtype must be uint8 (pixels 0-255) or float32 (in the input range)",
        ),
        (np.zeros((2, 28, 27), dtype=np.uint8), {}, "body: shape must be (N, 28, 28), got (2, 28, 27)"),
        (np.zeros((4097, 28, 28), dtype=np.uint8), {}, "body: must hold 1 to 4096 items, got 4097"),
        (np.array([{"x": 1}], dtype=object), {"allow_pickle": True}, "body: object arrays are refused"),
        (np.full((1, 28, 28), 1.5, dtype=np.float32), {}, "inputs[0][0][0]: must be within [0.0, 1.0], got 1.5"),
    ],
)
def test_bad_npy_batches_get_400_naming_the_rule(server, array, kwargs, rule):
    r = post_npy(server, array, **kwargs)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(rule)


def test_npy_batch_truncated_wrong_type_and_oversize(server):
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 28, 28), dtype=np.uint8))
    r = post_raw(server, "/mnist/predict_batch", buf.getvalue()[:-10], content_type="application/x-npy")
    assert r.status_code == 400 and "data truncated" in r.json()["error"]
    r = post_raw(server, "/mnist/predict_batch", buf.getvalue(), content_type="application/octet-stream")
    assert r.status_code == 415 and r.json()["error"] == (
        "Content-Type: must be application/x-npy, got 'application/octet-stream'"
    )
    r = post_raw(server, "/mnist/predict_batch", b"\x93NUMPY" + b" " * (16 * 1024 * 1024), "application/x-npy")
    assert r.status_code == 413


def test_a_4096_image_batch_is_answered(server):
    pixels = np.random.default_rng(3).integers(0, 256, size=(4096, 28, 28), dtype=np.uint8)
    r = post_npy(server, pixels)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 4096


def test_kubernetes_probes_and_scrape_path_are_routes_the_service_answers(server):
    from tests.test_k8s import by_kind, render

    objects = render()
    (container,) = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    paths = {container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    paths |= {e["path"] for e in by_kind(objects, "ServiceMonitor")["spec"]["endpoints"]}
    assert paths == {"/readyz", "/livez", "/metrics"}
    for path in sorted(paths):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path
    assert container["ports"][0]["containerPort"] == 3000  # the port a containerized bento serves on


def test_detail_units_gives_each_units_share_of_positions_on_as_an_independent_count(server, reference, test_images):
    images = test_images[0][:3]
    r = httpx.post(f"{server.url}/models/mnist_cnn/predict_batch?detail=units", content=npy_bytes(images), headers=NPY)
    assert r.status_code == 200, r.text
    expected = reference(images)["shares"]
    for i, item in enumerate(r.json()["predictions"]):
        assert set(item["units"]) == set(expected)
        for layer, shares in item["units"].items():
            np.testing.assert_allclose(shares, expected[layer][i], atol=5e-5)  # rounded to 4 decimals
    plain = httpx.post(f"{server.url}/models/mnist_cnn/predict_batch", content=npy_bytes(images), headers=NPY)
    assert "units" not in plain.json()["predictions"][0]  # only when asked for
    iris = post_json(server, "/models/iris_l1/predict?detail=units", {"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    assert iris.status_code == 200 and iris.json()["predictions"][0]["units"] == {}


def test_examples_are_calibration_items_with_labels_and_a_tabular_card_has_feature_ranges(server, trained):
    r = httpx.get(f"{server.url}/models/mnist_cnn/examples", timeout=10)
    assert r.status_code == 200
    examples = r.json()
    assert 2 <= len(examples["inputs"]) <= 8 and len(examples["labels"]) == len(examples["inputs"])
    assert np.asarray(examples["inputs"]).shape[1:] == (28, 28)
    assert len(set(examples["labels"])) == len(examples["labels"])  # one of each class first
    card = httpx.get(f"{server.url}/models/iris_l1", timeout=10).json()
    assert len(card["feature_ranges"]) == 4 and all(low < high for low, high in card["feature_ranges"])
    missing = httpx.get(f"{server.url}/models/no_such_model/examples", timeout=10)
    assert missing.status_code == 404 and "no model named 'no_such_model'" in missing.json()["error"]
