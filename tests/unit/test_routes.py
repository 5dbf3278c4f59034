"""One route table: every alias endpoint is guarded, every guarded alias is an endpoint or answered by
service.rest.modelroutes, and every model's routes are matched by name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from service import routes
from service.routes import ALIASES, MODEL_ROUTES, ROUTES, match


@pytest.fixture(scope="module")
def apis(small_store) -> dict[str, list[str]]:
    """The service's @bentoml.api endpoints and their input fields, read in a child process (importing the
    service needs a model store with a model in it)."""
    code = (
        "import json, service.service as s; "
        "print(json.dumps({a.route: sorted(a.input_spec.model_fields) for a in s.SparsityService.apis.values()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=small_store, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_endpoint_has_a_guarded_route_and_every_route_an_endpoint(apis):
    assert set(apis) == {route.path for route in ROUTES if route.bentoml_api}


def test_routes_without_an_endpoint_are_answered_by_the_model_routes():
    assert {route.path for route in ROUTES if not route.bentoml_api} == {
        routes.MNIST_PREDICT_BATCH.path,
        *(route.path for route in MODEL_ROUTES.values()),
    }


def test_upload_fields_are_the_endpoints_file_parameters(apis):
    for route in (r for r in ROUTES if r.bentoml_api):
        if route.upload_field is not None:
            assert route.upload_field in apis[route.path], route
            assert route.content_types == ("multipart/form-data",)
        else:
            assert route.content_types == ("application/json",)
            assert apis[route.path] == [route.json_key]


@pytest.mark.parametrize(
    ("path", "action", "model"),
    [
        ("/models/wine_mlp/predict", "predict", "wine_mlp"),
        ("/models/wine_mlp/predict/", "predict", "wine_mlp"),
        ("/models/a.b-c/predict_batch", "predict_batch", "a.b-c"),
        ("/models/x/predict_image", "predict_image", "x"),
        ("/mnist/predict", "predict", "mnist_cnn"),
        ("/mnist/predict_batch", "predict_batch", "mnist_cnn"),
        ("/iris/predict", "predict", "iris_l1"),
    ],
)
def test_prediction_paths_name_their_route_and_model(path, action, model):
    route, name = match(path)
    assert (route.action, name) == (action, model)


@pytest.mark.parametrize("path", ["/models", "/models/x", "/models//predict", "/models/x/train", "/models/x/y/predict"])
def test_other_paths_are_no_prediction_route(path):
    assert match(path) is None


def model_card_name(path: str) -> tuple[str | None, str | None]:
    """What the table says of ``GET path``: ``(name, "card" | "examples")`` for a model's card routes."""
    found = routes.resolve("GET", path)
    if found is None or found.route is None or found.route.action not in ("card", "examples"):
        return None, None
    return found.params["name"], found.route.action


def test_card_paths():
    assert model_card_name("/models/wine_mlp") == ("wine_mlp", "card")
    assert model_card_name("/models/") == (None, None)
    assert model_card_name("/models/x/predict") == (None, None)
    assert model_card_name("/models/x/examples") == ("x", "examples")
    assert {alias.model for alias in ALIASES} == {"mnist_cnn", "iris_l1"}
