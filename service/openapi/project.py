"""The project's own routes in the API document: the routes served outside ``@bentoml.api`` and the schemas of
the model cards."""

from __future__ import annotations

from typing import Any

from modelstore.card import ModelCard
from modelstore.kinds import KINDS
from service import routes
from service.codecs.npy import ACCEPTED_DTYPES
from service.openapi.parts import json_content, ref, schemas_of
from service.schemas import Error, ExamplesResponse, ModelsResponse, PredictRequest, PredictResponse
from sparsity.contract import MAX_BATCH, MAX_NPY_ITEMS

DOCUMENT_PATH = "/docs.json"
OPENAPI_VERSION = "3.0.3"
TITLE = "ReLU sparsity service"
DESCRIPTION = (
    "Predictions from every registered model (Keras and ONNX classifiers whose hidden layers are ReLU-family, and "
    "linear classifiers), each answered with the activation sparsity of its own forward pass: the fraction "
    "of exact zeros in every ReLU-family layer, or the share of zero coefficient-times-feature terms, plus "
    "a typicality score. `GET /models` lists the served models; each has `/models/{name}/predict` (JSON), "
    "`/models/{name}/predict_batch` (.npy) and, for picture models, `/models/{name}/predict_image`. The "
    "`/mnist/*` and `/iris/predict` routes are aliases of `mnist_cnn`'s and `iris_l1`'s.\n\n"
    "Every refusal (400, 404, 408, 413, 415) has the same body, the `Error` schema: `error` is one line "
    "naming the field and the rule, `detail` lists it as `{type, loc, msg}`."
)
API_TAG = "service"
"""The tag of the prediction routes and /models (BentoML's is "Service APIs": ``api.service_ap_is`` in a
generated Python client)."""
REFUSALS = {
    "400": "Invalid input: a field, a value or the body breaks a rule (named in `error`)",
    "404": "No model of that name is served (`GET /models` lists them), or it takes no pictures (predict_image)",
    "408": "The request body did not arrive within BODY_TIMEOUT_SECONDS (the connection is closed)",
    "413": "The request body is larger than MAX_BODY_BYTES",
    "415": "The Content-Type is not the one this route accepts",
}
REPLACED_COMPONENTS = ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse")
"""BentoML's error components (replaced by ``Error``) and its task-queue schema (no task endpoints)."""


def _one_digit() -> list[list[float]]:
    """A 28x28 image of a vertical stroke: a plausible "1", small enough to read in the docs."""
    return [[1.0 if 4 <= row < 24 and 13 <= col < 15 else 0.0 for col in range(28)] for row in range(28)]


EXAMPLES: dict[str, Any] = {
    "mnist_predict": {"images": [_one_digit()]},
    "iris_predict": {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
}
"""Request body examples, by endpoint name (valid requests: the integration tests send them)."""


def refusals() -> dict:
    return {status: {"description": text, "content": json_content(ref("Error"))} for status, text in REFUSALS.items()}


def camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def _card_schema(card: type[ModelCard], title: str, what: str) -> tuple[dict, dict]:
    """The schema of one entry of ``GET /models`` (``{"tag", **card.describe()}``), and its $defs."""
    schema = card.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
    public = set(card.PUBLIC)
    properties = {
        "name": {"type": "string", "description": "the model's name: its routes are /models/{name}/..."},
        "tag": {"type": "string", "description": "the model's tag in the BentoML store"},
    }
    properties |= {name: value for name, value in schema["properties"].items() if name in public}
    properties["engine"] = {
        "type": "string",
        "enum": ["sparse", "onnxruntime", "tensorflow", "numpy"],
        "description": "what computes this model's answers in this service: the fastest engine that passed its "
        "check at registration (see engines), unless the ENGINE setting names another",
    }
    required = ["name", "tag", *(name for name in schema.get("required", []) if name in public)]
    entry = {"type": "object", "title": title, "description": what, "properties": properties, "required": required}
    return entry, schema.get("$defs", {})


def component_schemas() -> dict[str, dict]:
    """The named schemas this service defines itself (pydantic models and model cards)."""
    schemas = schemas_of((PredictResponse, Error, ExamplesResponse, ModelsResponse))
    schemas |= schemas_of((PredictRequest,), "validation")
    entries, definitions = {}, {}
    for kind in KINDS.values():
        title = kind.card.__name__.removesuffix("Card") + "ModelInfo"
        entries[title], defs = _card_schema(kind.card, title, kind.describes)
        definitions |= defs
    schemas |= definitions | entries
    schemas["ModelInfo"] = {
        "title": "ModelInfo",
        "description": "One served model's card (by its kind)",
        "oneOf": [ref(title) for title in entries],
    }
    return schemas


NAME_PARAMETER = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the model's name (GET /models lists them)",
    "schema": {"type": "string"},
    "example": "mnist_cnn",
}


DETAIL_PARAMETER = {
    "name": "detail",
    "in": "query",
    "required": False,
    "description": "`units`: each answer also carries `units`, per ReLU layer each unit's share of its positions "
    "that were on for this input (0: it did not fire); empty for a linear model",
    "schema": {"type": "string", "enum": ["units"]},
}


VERSION_PARAMETER = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": "one serving version of the model answers (GET /models lists them); without it, the version "
    "that answers the name (and, with a canary set, its candidate for the canary's share of requests)",
    "schema": {"type": "string"},
}


def _post(operation_id: str, description: str, content: dict, example: Any = None, name: bool = True) -> dict:
    body: dict = {"required": True, "content": content}
    if example is not None:
        next(iter(content.values()))["example"] = example
    operation = {
        "tags": [API_TAG],
        "operationId": operation_id,
        "description": description,
        "requestBody": body,
        "responses": {"200": {"description": "Successful Response", "content": json_content(ref("PredictResponse"))}}
        | refusals(),
    }
    if name:
        operation["parameters"] = [NAME_PARAMETER, DETAIL_PARAMETER, VERSION_PARAMETER]
    return {"post": operation}


def extra_paths() -> dict:
    """The routes answered outside ``@bentoml.api``: every model's routes, the alias .npy route and /models."""
    dtypes = " or ".join(ACCEPTED_DTYPES.values())
    npy = {"application/x-npy": {"schema": {"type": "string", "format": "binary"}}}
    upload = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary", "description": "a PNG or JPEG"}},
            }
        }
    }
    batch_text = (
        f"1-{MAX_NPY_ITEMS} inputs sent as one NumPy `.npy` file (as written by `numpy.save`) of shape "
        f"(N, *input_shape), dtype {dtypes}; uint8 pixels are scaled onto the input range; never unpickled. "
        "The fast route for large batches."
    )
    models = {
        "get": {
            "tags": [API_TAG],
            "operationId": "list_models",
            "description": "The served models' cards: tags, accuracy, sparsity baselines (what Prometheus compares "
            "live sparsity with), typicality calibration; and the stored models that are not served, with why.",
            "responses": {
                "200": {"description": "Successful Response", "content": json_content(ref("ModelsResponse"))}
            },
        }
    }
    card = {
        "get": {
            "tags": [API_TAG],
            "operationId": "get_model",
            "description": "One served model's card.",
            "parameters": [NAME_PARAMETER],
            "responses": {
                "200": {"description": "Successful Response", "content": json_content(ref("ModelInfo"))},
                "404": {"description": REFUSALS["404"], "content": json_content(ref("Error"))},
            },
        }
    }
    examples = {
        "get": {
            "tags": [API_TAG],
            "operationId": "get_model_examples",
            "description": "A few items of the model's calibration set that neither fitted nor calibrated anything "
            "(with their labels when registration had labels): inputs to try the model on.",
            "parameters": [NAME_PARAMETER],
            "responses": {
                "200": {"description": "Successful Response", "content": json_content(ref("ExamplesResponse"))},
                "404": {"description": REFUSALS["404"], "content": json_content(ref("Error"))},
            },
        }
    }
    generic = routes.MODEL_ROUTES
    return {
        routes.MNIST_PREDICT_BATCH.path: _post(
            "mnist_predict_batch",
            f"Classify with mnist_cnn {batch_text} The same as /models/mnist_cnn/predict_batch.",
            npy,
            name=False,
        ),
        routes.MODELS_PATH: models,
        routes.MODELS_PATH + "/{name}": card,
        routes.MODELS_PATH + "/{name}/examples": examples,
        generic["predict"].path: _post(
            "predict",
            f"Classify 1-{MAX_BATCH} inputs with the model `name`; each answer carries the sparsity of its own "
            "forward pass and its typicality.",
            json_content(ref("PredictRequest")),
            {"inputs": EXAMPLES["mnist_predict"]["images"]},
        ),
        generic["predict_batch"].path: _post("predict_batch", f"Classify {batch_text}", npy),
        generic["predict_image"].path: _post(
            "predict_image",
            "Classify one uploaded PNG or JPEG with a picture model (input (H, W), (H, W, 1), (H, W, 3), or "
            "channels first (1, H, W) or (3, H, W)), converted by the step its card declares (`preprocessing`: "
            "resize, or mnist-digit).",
            upload,
        ),
    }
