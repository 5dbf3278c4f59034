"""The data plane without HTTP, and the model routes as a thin adapter on it: the toy kind's runtime (a NumPy
MLP, no TensorFlow, no store) served in process, every refusal typed with its status, field and rule, and the
adapter's answers the plane's own bytes."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from modelstore.register import Calibration, relu_card
from service.codecs.responses import predict_json
from service.dataplane import DataPlane
from service.errors import ExamplesHidden, InvalidInput, ModelNotFound, NotAPictureModel, error_body
from service.rest.modelroutes import ModelRoutes
from sparsity.detectors import STATE_FILE
from tests import toy_kind
from tests.helpers import asgi_request


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> DataPlane:
    directory = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(1)
    path = directory / "model.npz"
    np.savez(
        path, w1=rng.normal(size=(4, 12)), b1=rng.normal(size=12) - 0.3, w2=rng.normal(size=(12, 3)), b2=np.zeros(3)
    )
    card, files = relu_card(path, Calibration(rng.random((90, 4))), toy_kind.open_mlp(path), input_range=(0.0, 1.0))
    (directory / STATE_FILE).write_bytes(files[STATE_FILE])
    plane = DataPlane(max_image_pixels=10**6)
    plane.use([toy_kind.NumpyMlpRuntime("toy_plane:v1", card, str(path))])
    return plane


X = np.array([[0.2, 0.4, 0.6, 0.8], [1.0, 0.0, 0.5, 0.25]])


def test_models_are_found_by_name_and_version_or_refused_as_not_found(plane):
    assert plane.model("toy_plane").tag == "toy_plane:v1"
    assert plane.model("toy_plane", "v1") is plane.model("toy_plane")
    for name, version in (("nothing", None), ("toy_plane", "v2")):
        with pytest.raises(ModelNotFound) as refused:
            plane.model(name, version)
        assert (refused.value.status, refused.value.field, refused.value.kind) == (404, "model", "model_not_found")
    assert "'toy_plane' in version 'v2'" in refused.value.message
    assert [m["name"] for m in plane.models()["models"]] == ["toy_plane"]
    assert plane.card("toy_plane")["kind"] == "numpy-mlp"


def test_bodies_decode_or_are_refused_naming_the_field_and_the_rule(plane):
    runtime = plane.model("toy_plane")
    x = plane.decode(runtime, json.dumps({"inputs": X.tolist()}).encode(), "json")
    np.testing.assert_array_equal(x, X.astype(x.dtype))
    for body, field in (
        (b'{"inputs": [[0.1, "a", 0.2, 0.3]]}', "inputs[0][1]"),
        (b'{"inputs": [[2, 0, 0, 0]]}', "inputs"),
    ):
        with pytest.raises(InvalidInput) as refused:
            plane.decode(runtime, body, "json")
        assert refused.value.status == 400 and refused.value.field.startswith(field)
    with pytest.raises(NotAPictureModel) as refused:
        plane.decode_picture(runtime, b"\x89PNG")
    assert refused.value.status == 404 and "not pictures" in refused.value.message
    assert plane.check_detail([]) is None and plane.check_detail(["units"]) == "units"
    with pytest.raises(InvalidInput, match="detail: must be one of: units; got all"):
        plane.check_detail(["all"])


def test_infer_answers_as_the_runtime_predicts(plane):
    runtime = plane.model("toy_plane")
    body = plane.infer_json(runtime, X, "units")
    assert body == predict_json(runtime, runtime.predict(X), "units")
    answers = json.loads(body)["predictions"]
    hidden = np.maximum(X @ runtime.probe.w1 + runtime.probe.b1, 0)
    assert [a["sparsity"]["layers"]["hidden"] for a in answers] == pytest.approx((hidden == 0).mean(axis=1).tolist())


def _call(plane, method: str, path: str, body: bytes = b"") -> httpx.Response:
    async def fallback(scope, receive, send):  # what BentoML would answer: the routes pass everything else on
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"fallback"})

    headers = {"content-type": "application/json"}
    return asgi_request(ModelRoutes(fallback, plane=plane), method, path, content=body, headers=headers)


def test_the_model_routes_answer_through_the_plane_with_one_error_shape(plane):
    runtime = plane.model("toy_plane")
    body = json.dumps({"inputs": X.tolist()}).encode()
    ok = _call(plane, "POST", "/models/toy_plane/predict", body)
    x = plane.decode(runtime, body, "json")  # as the route reads it (float32)
    assert ok.status_code == 200 and ok.content == predict_json(runtime, runtime.predict(x))
    missing = _call(plane, "POST", "/models/nothing/predict", b'{"inputs": [[0, 0, 0, 0]]}')
    assert missing.status_code == 404 and missing.content == error_body(
        "no model named 'nothing' is served (GET /models lists them)", "model", "model_not_found"
    )
    bad = _call(plane, "POST", "/models/toy_plane/predict?detail=all", b'{"inputs": [[0, 0, 0, 0]]}')
    assert bad.status_code == 400 and bad.json()["error"] == "detail: must be one of: units; got all"
    picture = _call(plane, "POST", "/models/toy_plane/predict_image", b"")
    assert picture.status_code == 404 and picture.json()["detail"][0]["type"] == "not_a_picture_model"
    assert _call(plane, "GET", "/models").json() == plane.models()
    assert _call(plane, "GET", "/models/toy_plane").json() == plane.card("toy_plane")
    assert _call(plane, "GET", "/livez").status_code == 299  # not a model route: passed on


def test_examples_are_withheld_when_the_setting_says_so(plane):
    hidden = DataPlane(max_image_pixels=10**6, expose_examples=False)
    hidden.use([plane.model("toy_plane")])
    assert plane.examples("toy_plane")["inputs"]  # shown by default
    with pytest.raises(ExamplesHidden) as refused:
        hidden.examples("toy_plane")
    assert refused.value.status == 404 and "EXPOSE_EXAMPLES=false" in refused.value.message
    answer = _call(hidden, "GET", "/models/toy_plane/examples")
    assert answer.status_code == 404 and answer.json()["error"].startswith("examples: ")
    assert "examples" not in json.dumps(hidden.card("toy_plane"))  # not in the card either
