"""The Open Inference Protocol's tensors and routes in process, on the toy kind's runtime: the flat, nested
and binary input forms give the same batch; each output equals the data plane's own prediction; requested
outputs and binary outputs are honoured; every refusal names the field and the rule."""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import pytest

from modelstore.register import Calibration, relu_card
from service import routes
from service.codecs import oip
from service.dataplane import DataPlane
from service.rest.oiproutes import OipRoutes
from sparsity.detectors import STATE_FILE
from sparsity.errors import InvalidInputError
from tests import toy_kind
from tests.helpers import asgi_request


def _toy(directory, tag: str, seed: int):
    rng = np.random.default_rng(seed)
    path = directory / "model.npz"
    np.savez(
        path, w1=rng.normal(size=(4, 12)), b1=rng.normal(size=12) - 0.3, w2=rng.normal(size=(12, 3)), b2=np.zeros(3)
    )
    card, files = relu_card(path, Calibration(rng.random((90, 4))), toy_kind.open_mlp(path), input_range=(0.0, 1.0))
    (directory / STATE_FILE).write_bytes(files[STATE_FILE])
    return toy_kind.NumpyMlpRuntime(tag, card, str(path))


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> DataPlane:
    plane = DataPlane(max_image_pixels=10**6)
    old = _toy(tmp_path_factory.mktemp("v1"), "toy:v1", 1)
    new = _toy(tmp_path_factory.mktemp("v2"), "toy:v2", 2)
    old.created, new.created = 1.0, 2.0
    plane.use([old, new])
    return plane


X = np.array([[0.2, 0.4, 0.6, 0.8], [1.0, 0.0, 0.5, 0.25], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)


def _request(x=X, **extra) -> dict:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]
    } | extra


def _binary_request(x=X, **extra) -> tuple[bytes, str]:
    raw = x.astype("<f4").tobytes()
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": len(raw)}}
    header = json.dumps({"inputs": [tensor]} | extra).encode()
    return header + raw, str(len(header))


def test_flat_nested_and_binary_inputs_are_the_same_batch(plane):
    runtime = plane.model("toy")
    flat = oip.parse_infer(json.dumps(_request()).encode(), None, runtime)
    nested = _request()
    nested["inputs"][0]["data"] = X.tolist()
    body, length = _binary_request()
    for parsed in (
        flat,
        oip.parse_infer(json.dumps(nested).encode(), None, runtime),
        oip.parse_infer(body, length, runtime),
    ):
        np.testing.assert_array_equal(parsed.x, X)
        assert [name for name, _ in parsed.outputs] == [s.name for s in oip.output_specs(runtime)]
        assert not parsed.units


def test_the_outputs_are_the_prediction_in_json_and_in_binary(plane):
    runtime = plane.model("toy")
    prediction = runtime.predict(X)
    request = oip.parse_infer(json.dumps(_request(id="r1")).encode(), None, runtime)
    body, header = oip.infer_response(runtime, prediction, request)
    assert header is None
    answer = json.loads(body)
    assert answer["model_name"] == "toy" and answer["model_version"] == "v2" and answer["id"] == "r1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["probabilities"]["shape"] == [3, 3]
    np.testing.assert_allclose(
        np.reshape(outputs["probabilities"]["data"], (3, 3)), prediction.probabilities, rtol=1e-6
    )
    assert outputs["label"]["data"] == prediction.labels.tolist() and outputs["label"]["datatype"] == "INT64"
    assert outputs["sparsity"]["parameters"] == {"layers": "hidden"}
    np.testing.assert_allclose(outputs["sparsity"]["data"], prediction.layer_sparsity["hidden"], rtol=1e-6)
    assert outputs["atypical"]["data"] == prediction.atypical.tolist() and outputs["atypical"]["datatype"] == "BOOL"

    asked = _request(outputs=[{"name": "units/hidden", "parameters": {"binary_data": True}}, {"name": "label"}])
    request = oip.parse_infer(json.dumps(asked).encode(), None, runtime)
    assert request.units
    body, header = oip.infer_response(runtime, prediction, request)
    head = json.loads(body[:header])
    assert [o["name"] for o in head["outputs"]] == ["units/hidden", "label"]
    size = head["outputs"][0]["parameters"]["binary_data_size"]
    assert size == 3 * 12 * 4 and len(body) == header + size
    units = np.frombuffer(body[header:], dtype="<f4").reshape(3, 12)
    np.testing.assert_array_equal(units, prediction.shares["hidden"].astype(np.float32))
    assert head["outputs"][1]["data"] == prediction.labels.tolist()


def test_detail_units_adds_the_per_unit_outputs_and_binary_data_output_makes_all_binary(plane):
    runtime = plane.model("toy")
    request = oip.parse_infer(
        json.dumps(_request(parameters={"detail": "units", "binary_data_output": True})).encode(), None, runtime
    )
    assert request.units and ("units/hidden", True) in request.outputs
    assert all(binary for _, binary in request.outputs)


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        (lambda r: r.update(inputs=[]), "inputs", "must be a list of one tensor"),
        (lambda r: r["inputs"][0].update(name="x"), "inputs[0].name", "must be 'input'"),
        (lambda r: r["inputs"][0].update(datatype="INT8"), "inputs[0].datatype", "must be one of FP32, FP64"),
        (lambda r: r["inputs"][0].update(shape=[3, 5]), "inputs[0].shape", "must be [N, 4]"),
        (lambda r: r["inputs"][0].update(shape=[0, 4]), "inputs[0].shape", "N must be 1 to"),
        (lambda r: r["inputs"][0].update(shape=[3, True]), "inputs[0].shape", "must be [N, 4]"),
        (lambda r: r["inputs"][0].update(data=[0.1] * 11), "inputs[0].data", "must hold 12 values"),
        (lambda r: r["inputs"][0].update(data=["a"] * 12), "inputs[0].data", "must contain only numbers"),
        (lambda r: r["inputs"][0].update(data=[[0.1, 0.2], [0.3]]), "inputs[0].data", "nested evenly"),
        (lambda r: r["inputs"][0].update(data=[2.0] * 12), "inputs[0].data", "must be within [0.0, 1.0]"),
        (lambda r: r["inputs"][0].pop("data"), "inputs[0].data", "is required"),
        (lambda r: r.update(outputs=[{"name": "logits"}]), "outputs[0].name", "must be one of probabilities"),
        (lambda r: r.update(outputs=[]), "outputs", "non-empty list"),
        (lambda r: r.update(parameters={"detail": "all"}), "parameters.detail", "must be 'units'"),
        (lambda r: r.update(id=5), "id", "must be a string"),
        (
            lambda r: r.update(parameters={"binary_data_output": "yes"}),
            "body.parameters.binary_data_output",
            "true or false",
        ),
    ],
)
def test_a_bad_request_names_the_field_and_the_rule(plane, change, field, rule):
    request = _request()
    change(request)
    with pytest.raises(InvalidInputError) as refused:
        oip.parse_infer(json.dumps(request).encode(), None, plane.model("toy"))
    assert refused.value.field.startswith(field) and rule in refused.value.rule


def test_bad_binary_framing_is_refused(plane):
    runtime = plane.model("toy")
    body, length = _binary_request()
    for header, payload, field in (
        (str(len(body) + 1), body, "Inference-Header-Content-Length"),
        ("ten", body, "Inference-Header-Content-Length"),
        (length, body[:-4], "inputs[0].parameters.binary_data_size"),
    ):
        with pytest.raises(InvalidInputError) as refused:
            oip.parse_infer(payload, header, runtime)
        assert refused.value.field == field
    with pytest.raises(InvalidInputError, match="must be JSON"):
        oip.parse_infer(b"{nope", None, runtime)


def test_paths_split_into_name_version_and_action():
    def split(method, path):
        found = routes.resolve(method, path)
        return found.params.get("name"), found.params.get("version"), found.route.action

    assert split("GET", "/v2/models/toy") == ("toy", None, "metadata")
    assert split("POST", "/v2/models/toy/versions/v1/infer") == ("toy", "v1", "infer")
    assert split("GET", "/v2/models/toy/ready/") == ("toy", None, "ready")
    assert routes.resolve("GET", "/v2/models/toy/explain") is None
    assert routes.resolve("GET", "/v2/models/toy/infer").route is None  # a path, but not for GET


def _call(plane, method: str, path: str, **kwargs) -> httpx.Response:
    async def fallback(scope, receive, send):
        raise AssertionError(f"{path} fell through")

    return asgi_request(OipRoutes(fallback, plane=plane), method, path, **kwargs)


def test_the_routes_answer_versions_metadata_and_errors_as_the_spec_says(plane):
    assert _call(plane, "GET", "/v2/health/live").json() == {"live": True}
    assert _call(plane, "GET", "/v2").json()["extensions"][:2] == ["model_repository", "binary_tensor_data"]
    meta = _call(plane, "GET", "/v2/models/toy").json()
    assert meta["versions"] == ["v2", "v1"] and meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    ]
    assert _call(plane, "GET", "/v2/models/toy/versions/v1/ready").json()["version"] == "v1"
    missing = _call(plane, "GET", "/v2/models/toy/versions/v9")
    assert missing.status_code == 404 and "'toy' in version 'v9'" in missing.json()["error"]
    old = _call(plane, "POST", "/v2/models/toy/versions/v1/infer", json=_request())
    new = _call(plane, "POST", "/v2/models/toy/infer", json=_request())
    assert old.json()["model_version"] == "v1" and new.json()["model_version"] == "v2"
    expected = plane.model("toy", "v1").predict(X).labels.tolist()
    assert next(o for o in old.json()["outputs"] if o["name"] == "label")["data"] == expected
    bad = _call(plane, "POST", "/v2/models/toy/infer", json=_request(outputs=[{"name": "x"}]))
    assert bad.status_code == 400 and bad.json()["error"].startswith("outputs[0].name: must be one of")
    body, length = _binary_request()
    binary = _call(
        plane,
        "POST",
        "/v2/models/toy/infer",
        content=body,
        headers={"Inference-Header-Content-Length": length, "Content-Type": "application/octet-stream"},
    )
    assert binary.status_code == 200 and "inference-header-content-length" not in binary.headers
    repository = _call(plane, "POST", "/v2/repository/index")
    assert repository.status_code == 503 and "not available" in repository.json()["error"]


def test_float64_and_a_linear_header_round_trip(plane):
    runtime = plane.model("toy")
    request = _request()
    request["inputs"][0]["datatype"] = "FP64"
    parsed = oip.parse_infer(json.dumps(request).encode(), None, runtime)
    assert parsed.x.dtype == np.float32
    raw = struct.pack("<12d", *X.ravel().astype(np.float64))
    tensor = {"name": "input", "datatype": "FP64", "shape": [3, 4], "parameters": {"binary_data_size": 96}}
    header = json.dumps({"inputs": [tensor]}).encode()
    np.testing.assert_array_equal(oip.parse_infer(header + raw, str(len(header)), runtime).x, X)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["inputs"][0].update(datatype={}),
        lambda r: r["inputs"][0].update(name=[]),
        lambda r: r.update(outputs=[{"name": {}}]),
        lambda r: r.update(parameters={"detail": {}}),
        lambda r: r["inputs"][0].update(shape=[[]]),
        lambda r: r["inputs"][0].update(parameters={"binary_data_size": {}}),
        lambda r: r.update(inputs=[[]]),
    ],
)
def test_values_of_the_wrong_json_type_get_400_not_an_exception(plane, change):
    request = _request()
    change(request)
    response = _call(plane, "POST", "/v2/models/toy/infer", json=request)
    assert response.status_code == 400, response.text


def test_the_answers_the_codecs_build_are_what_the_typed_protocol_says(plane):
    """The document is generated from service.protocol; the routes answer through service.codecs.oip: the two
    cannot drift apart unnoticed."""
    from service import protocol

    runtime = plane.model("toy")
    protocol.OipModelMetadata.model_validate(oip.metadata(runtime, ["v2", "v1"]))
    for request in (_request(), _request(parameters={"detail": "units"})):
        answer = _call(plane, "POST", "/v2/models/toy/infer", json=request)
        assert answer.status_code == 200
        typed = protocol.OipInferenceResponse.model_validate_json(answer.content)
        assert {o.name for o in typed.outputs} >= {"probabilities", "label", "sparsity"}
        protocol.OipInferenceRequest.model_validate(request)
    protocol.OipError.model_validate_json(_call(plane, "GET", "/v2/models/nothing").content)
    protocol.OipReady.model_validate_json(_call(plane, "GET", "/v2/models/toy/ready").content)
    protocol.OipServerMetadata.model_validate_json(_call(plane, "GET", "/v2").content)
    with pytest.raises(ValueError):
        protocol.OipInferenceRequest.model_validate({"inputs": []})  # the document's minItems, as the parser's
    assert _call(plane, "POST", "/v2/models/toy/infer", json={"inputs": []}).status_code == 400
