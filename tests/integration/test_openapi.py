"""The OpenAPI document a real ``bentoml serve`` publishes at /docs.json, and a Python client generated
from it with openapi-python-client, called against the same service."""

from __future__ import annotations

import importlib
import io
import os
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from tests.helpers import png_bytes
from tests.tools import ROOT, run_in_project

pytestmark = [pytest.mark.slow, pytest.mark.integration]
POST_ROUTES = (
    "/mnist/predict",
    "/mnist/predict_image",
    "/mnist/predict_batch",
    "/iris/predict",
    "/models/{name}/predict",
    "/models/{name}/predict_batch",
    "/models/{name}/predict_image",
)


@pytest.fixture(scope="module")
def document(server) -> dict:
    r = httpx.get(f"{server.url}/docs.json", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


def conforms(document: dict, schema: dict, instance) -> None:
    """Validate ``instance`` against ``schema`` (a $ref into the document, or inline) as OpenAPI 3.0."""
    OAS30Validator({**schema, "components": document["components"]}).validate(instance)


def test_the_served_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.0.")
    assert not any(node.get("type") == "file" for node in _schemas(document))


def _schemas(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def test_every_route_lists_what_it_can_answer_and_nothing_else(document):
    paths = document["paths"]
    assert set(POST_ROUTES) | {"/models", "/models/{name}"} <= set(paths)
    for path in POST_ROUTES:
        responses = paths[path]["post"]["responses"]
        assert set(responses) == {"200", "400", "404", "408", "413", "415"}, path
        for status in ("400", "404", "408", "413", "415"):
            assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert paths[path]["post"]["requestBody"]["required"] is True
    assert set(paths["/models"]["get"]["responses"]) == {"200"}
    assert set(paths["/models/{name}"]["get"]["responses"]) == {"200", "404"}
    every_status = {status for item in paths.values() for op in item.values() for status in op["responses"]}
    assert "500" not in every_status


def test_the_request_examples_are_valid_and_answered_as_documented(server, document):
    posted = 0
    for path in POST_ROUTES:
        operation = document["paths"][path]["post"]
        for media, content in operation["requestBody"]["content"].items():
            if "example" not in content:
                continue
            conforms(document, content["schema"], content["example"])
            name = next((p["example"] for p in operation.get("parameters", []) if p["name"] == "name"), "")
            r = httpx.post(f"{server.url}{path.replace('{name}', name)}", json=content["example"], timeout=60)
            assert media == "application/json" and r.status_code == 200, r.text
            conforms(document, operation["responses"]["200"]["content"]["application/json"]["schema"], r.json())
            posted += 1
    assert posted == 3  # /mnist/predict, /iris/predict and /models/mnist_cnn/predict


def test_models_answers_as_documented(server, document):
    r = httpx.get(f"{server.url}/models", timeout=30)
    assert r.status_code == 200
    conforms(
        document,
        document["paths"]["/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
        r.json(),
    )
    keras = {"$ref": "#/components/schemas/KerasReluModelInfo"}
    onnx = {"$ref": "#/components/schemas/OnnxReluModelInfo"}
    linear = {"$ref": "#/components/schemas/LinearModelInfo"}
    by_name = {model["name"]: model for model in r.json()["models"]}
    conforms(document, keras, by_name["mnist_cnn"])
    conforms(document, onnx, by_name["small_onnx"])
    conforms(document, linear, by_name["iris_l1"])
    with pytest.raises(Exception, match=r"required|is not one of"):  # the kinds are told apart
        conforms(document, linear, by_name["mnist_cnn"])
    with pytest.raises(Exception, match=r"required|is not one of"):
        conforms(document, onnx, by_name["digits_mlp"])
    card = document["paths"]["/models/{name}"]["get"]["responses"]
    conforms(document, card["200"]["content"]["application/json"]["schema"], by_name["residual_cnn"])
    missing = httpx.get(f"{server.url}/models/nope", timeout=30)
    assert missing.status_code == 404
    conforms(document, card["404"]["content"]["application/json"]["schema"], missing.json())


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status"),
    [
        ("/mnist/predict", b'{"images": [[[2.0]]]}', "application/json", 400),
        ("/iris/predict", b"{", "application/json", 400),
        ("/mnist/predict_batch", b"not npy", "application/x-npy", 400),
        ("/mnist/predict_image", b"--x--\r\n", "multipart/form-data; boundary=x", 400),
        ("/iris/predict", b"{}", "text/plain", 415),
        ("/mnist/predict", b"x" * (17 * 1024 * 1024), "application/json", 413),
        ("/models/{name}/predict", b'{"inputs": [[1]]}', "application/json", 400),
        ("/models/{name}/predict_batch", b"{}", "application/json", 415),
    ],
)
def test_every_kind_of_refusal_has_the_documented_error_body(server, document, path, body, content_type, status):
    url = server.url + path.replace("{name}", "digits_mlp")
    r = httpx.post(url, content=body, headers={"content-type": content_type}, timeout=60)
    assert r.status_code == status, r.text
    conforms(
        document,
        document["paths"][path]["post"]["responses"][str(status)]["content"]["application/json"]["schema"],
        r.json(),
    )


@pytest.fixture(scope="module")
def generated_client(server, tmp_path_factory):
    """``openapi-python-client generate`` on the served document, imported from a temporary folder."""
    out_dir = tmp_path_factory.mktemp("client")
    tool = Path(sys.executable).parent / "openapi-python-client"
    run = run_in_project(
        [
            str(tool),
            "generate",
            "--url",
            f"{server.url}/docs.json",
            "--config",
            str(ROOT / "clients" / "openapi-python-client.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(out_dir / "sparsity_client"),
        ],
        env={"PATH": f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}"},  # for its ruff post-hooks
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stdout and "will not be generated" not in run.stdout, run.stdout  # nothing skipped
    assert "Skipping Integration" not in run.stdout, run.stdout  # the ruff post-hooks ran: readable code
    sys.path.insert(0, str(out_dir))
    try:
        yield importlib.import_module("sparsity_client")
    finally:
        sys.path.remove(str(out_dir))
        for name in [name for name in sys.modules if name.split(".")[0] == "sparsity_client"]:
            del sys.modules[name]


def test_the_generated_client_predicts_through_every_route(server, generated_client, reference, test_images):
    from sparsity_client.api.service import (
        get_model,
        iris_predict,
        list_models,
        mnist_predict,
        mnist_predict_batch,
        mnist_predict_image,
        predict,
    )
    from sparsity_client.models import (
        IrisPredictRequest,
        MnistPredictImageRequest,
        MnistPredictRequest,
        PredictRequest,
        PredictResponse,
    )
    from sparsity_client.types import File

    client = generated_client.Client(base_url=server.url, timeout=httpx.Timeout(60.0))
    images = test_images[0][:3]
    expected = reference(images)

    answer = mnist_predict.sync(client=client, body=MnistPredictRequest(images=images.tolist()))
    assert isinstance(answer, PredictResponse) and answer.model == expected["tag"]
    for i, prediction in enumerate(answer.predictions):
        assert prediction.label == int(np.argmax(expected["probabilities"][i]))
        assert prediction.sparsity.overall == pytest.approx(expected["overall"][i], abs=1e-6)
        for layer, value in prediction.sparsity.layers.additional_properties.items():
            assert value == pytest.approx(expected["layers"][layer][i], abs=1e-6)

    buffer = io.BytesIO()
    np.save(buffer, np.rint(images * 255).astype(np.uint8))
    batch = mnist_predict_batch.sync(client=client, body=File(payload=io.BytesIO(buffer.getvalue())))
    assert [p.label for p in batch.predictions] == [p.label for p in answer.predictions]

    png = png_bytes(test_images[0][7])
    upload = File(payload=io.BytesIO(png), file_name="digit.png", mime_type="image/png")
    from_image = mnist_predict_image.sync(client=client, body=MnistPredictImageRequest(image=upload))
    direct = httpx.post(f"{server.url}/mnist/predict_image", files={"image": ("d.png", png, "image/png")}, timeout=60)
    assert from_image.to_dict() == direct.json()

    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    iris = iris_predict.sync(client=client, body=IrisPredictRequest(features=rows))
    direct = httpx.post(f"{server.url}/iris/predict", json={"features": rows}, timeout=60).json()
    assert [p.name for p in iris.predictions] == [p["name"] for p in direct["predictions"]]
    assert iris.predictions[0].sparsity.contributions == direct["predictions"][0]["sparsity"]["contributions"]

    generic = predict.sync(name="mnist_cnn", client=client, body=PredictRequest(inputs=images.tolist()))
    assert generic.to_dict() == answer.to_dict()

    models = list_models.sync(client=client)
    (mnist,) = [model for model in models.models if model.name == "mnist_cnn"]
    assert mnist.tag == expected["tag"] and mnist.activation_sparsity["all"].mean > 0
    assert get_model.sync(name="mnist_cnn", client=client).to_dict() == mnist.to_dict()
    assert get_model.sync_detailed(name="nope", client=client).status_code == 404


def test_a_refusal_reads_through_the_generated_error_type(server, generated_client):
    from sparsity_client.api.service import iris_predict
    from sparsity_client.models import Error, IrisPredictRequest

    client = generated_client.Client(base_url=server.url, timeout=httpx.Timeout(60.0))
    refused = iris_predict.sync_detailed(client=client, body=IrisPredictRequest(features=[[5.1, 3.5, 1.4]]))
    assert refused.status_code == 400
    assert isinstance(refused.parsed, Error)
    assert refused.parsed.error.startswith("features[0]: ") and "4" in refused.parsed.error
    (item,) = refused.parsed.detail
    assert item.loc == ["features", 0] and item.type_ == "too_short"


def test_bentomls_own_client_calls_the_routes_and_raises_invalid_argument(server, tmp_path, test_images):
    """The README's first way to call the service from Python."""
    import bentoml
    from bentoml.exceptions import InvalidArgument

    images = test_images[0][:2].tolist()
    digit = tmp_path / "digit.png"
    digit.write_bytes(png_bytes(test_images[0][7]))
    with bentoml.SyncHTTPClient(server.url) as client:
        assert (
            client.mnist_predict(images=images)
            == httpx.post(f"{server.url}/mnist/predict", json={"images": images}, timeout=60).json()
        )
        from_image = client.mnist_predict_image(image=digit)
        assert from_image["predictions"][0]["sparsity"]["layers"].keys() == {"conv1", "conv2", "dense"}
        rows = [[5.1, 3.5, 1.4, 0.2]]
        assert (
            client.iris_predict(features=rows)
            == httpx.post(f"{server.url}/iris/predict", json={"features": rows}, timeout=60).json()
        )
        with pytest.raises(InvalidArgument, match=r"features\[0\]: List should have at least 4 items"):
            client.iris_predict(features=[[5.1, 3.5, 1.4]])


def test_the_document_and_the_route_table_list_the_same_routes(document):
    """Every operation of the document is a route of service.routes.TABLE with that method, and every route the
    project answers itself (the models', the aliases', the protocol's, the shadows') is in the document."""
    from service import routes

    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method != "parameters"
    }
    for method, path in documented:
        found = routes.resolve(method, path)
        assert found is not None and found.route is not None, (method, path)
        assert found.route.template == path, (method, path)
    answered_here = (routes.MODELS, routes.OIP, routes.SHADOW)
    for route in routes.TABLE:
        if route.handler in answered_here or route.prediction is not None:
            for method in route.methods:
                if method != "HEAD":
                    assert (method, route.template) in documented, (method, route.template)
