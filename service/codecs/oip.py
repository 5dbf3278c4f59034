"""The Open Inference Protocol's (KServe V2's) tensors: an ``infer`` request to the model's input batch, a
prediction to the ``infer`` response, and a model's metadata.

- The input: one tensor named :data:`INPUT`, ``FP32`` (``FP64`` is accepted too), shape ``[N, *item_shape]``,
  its ``data`` flat in row-major order or nested as the shape says, or, with Triton's binary tensor extension,
  ``parameters.binary_data_size`` bytes of little-endian values after the JSON header
  (``Inference-Header-Content-Length``).
- The outputs (all by default, or those the request's ``outputs`` name): ``probabilities`` (FP32
  ``[N, classes]``), ``label`` (INT64 ``[N]``), ``sparsity`` (FP32 ``[N, layers]``, the layer names in its
  ``parameters.layers``), ``sparsity_overall`` (FP32 ``[N]``), ``typicality_score`` (FP32 ``[N]``) and
  ``atypical`` (BOOL ``[N]``); a linear model's ``weight_sparsity`` (FP32 ``[N]``) too. Per-unit firing, the
  project's ``detail=units``: the request's ``parameters: {"detail": "units"}`` adds ``units/<layer>``
  (FP32 ``[N, units]``: each unit's share of positions on), which can also be asked for by name.
- An output is answered in binary when the request says so (``parameters.binary_data`` on the output, or
  ``binary_data_output`` on the request), as Triton's clients ask by default.

Every refusal is an :class:`~sparsity.errors.InvalidInputError` naming the field and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from modelstore.runtime import Prediction, Runtime
from sparsity.contract import MAX_BATCH
from sparsity.errors import InvalidInputError
from sparsity.validation import check_batch

INPUT = "input"
DATATYPES = {"FP32": np.float32, "FP64": np.float64}
"""Input datatypes accepted (the model runs on float32; FP64 is cast)."""
WIRE = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "BOOL": "|b1"}
UNITS_PREFIX = "units/"
HEADER_LENGTH = "inference-header-content-length"


@dataclass
class OutputSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 for the batch axis
    parameters: dict | None = None


def output_specs(runtime: Runtime, units: bool = False) -> list[OutputSpec]:
    """The outputs ``runtime`` answers (with ``units``: its per-unit outputs too)."""
    classes = len(runtime.class_names)
    layers = list(runtime.layers)
    specs = [
        OutputSpec("probabilities", "FP32", [-1, classes], {"classes": ",".join(map(str, runtime.class_names))}),
        OutputSpec("label", "INT64", [-1]),
        OutputSpec("sparsity", "FP32", [-1, len(layers)], {"layers": ",".join(layers)}),
        OutputSpec("sparsity_overall", "FP32", [-1]),
        OutputSpec("typicality_score", "FP32", [-1]),
        OutputSpec("atypical", "BOOL", [-1]),
    ]
    relu = getattr(runtime.card, "relu_layers", None)
    if relu is None:
        specs.append(OutputSpec("weight_sparsity", "FP32", [-1]))
    elif units:
        specs += [OutputSpec(UNITS_PREFIX + layer.name, "FP32", [-1, layer.units]) for layer in relu]
    return specs


def metadata(runtime: Runtime, versions: list[str]) -> dict:
    """``GET /v2/models/{name}[/versions/{version}]``."""
    outputs = output_specs(runtime, units=True)
    return {
        "name": runtime.name,
        "versions": versions,
        "platform": runtime.card.kind,
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *runtime.item_shape]}],
        "outputs": [
            {"name": o.name, "datatype": o.datatype, "shape": o.shape}
            | ({"parameters": o.parameters} if o.parameters else {})
            for o in outputs
        ],
        "parameters": {"input_range": ",".join(f"{v:g}" for v in runtime.value_range), "engine": runtime.engine},
    }


@dataclass
class InferRequest:
    x: np.ndarray
    id: str | None
    outputs: list[tuple[str, bool]]  # (name, binary), in the order to answer
    units: bool


def _object(value, field: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInputError(field, "must be a JSON object")
    return value


def _parameters(holder: dict, field: str) -> dict:
    parameters = holder.get("parameters", {})
    if parameters is None:
        return {}
    return _object(parameters, f"{field}.parameters")


def _binary_flag(parameters: dict, key: str, field: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{field}.parameters.{key}", "must be true or false")
    return value


def parse_infer(body: bytes, header_length: str | None, runtime: Runtime) -> InferRequest:
    """An ``infer`` body (the JSON, then any binary tensors) as the model's input batch and what to answer."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInputError(
                "Inference-Header-Content-Length", f"must be a byte count of at most the body's {len(body)}"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError("body", f"must be JSON ({exc})") from None
    request = _object(request, "body")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("id", "must be a string")
    parameters = _parameters(request, "body")
    detail = parameters.get("detail")
    if detail is not None and detail != "units":
        raise InvalidInputError("parameters.detail", f"must be 'units' when given, got {detail!r}")
    units = detail == "units"
    binary_all = _binary_flag(parameters, "binary_data_output", "body")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidInputError("inputs", f"must be a list of one tensor, named {INPUT!r}")
    x = _tensor(_object(inputs[0], "inputs[0]"), binary, runtime)
    specs = {spec.name: spec for spec in output_specs(runtime, units=True)}
    default = [s.name for s in output_specs(runtime, units=units)]
    asked = request.get("outputs")
    if asked is None:
        outputs = [(name, binary_all) for name in default]
    else:
        if not isinstance(asked, list) or not asked:
            raise InvalidInputError("outputs", 'must be a non-empty list of {"name": ...} when given')
        outputs = []
        for i, item in enumerate(asked):
            item = _object(item, f"outputs[{i}]")
            name = item.get("name")
            if not isinstance(name, str) or name not in specs:
                raise InvalidInputError(f"outputs[{i}].name", f"must be one of {', '.join(specs)}; got {name!r}")
            flag = _binary_flag(_parameters(item, f"outputs[{i}]"), "binary_data", f"outputs[{i}]")
            outputs.append((name, flag or binary_all))
    return InferRequest(x, request_id, outputs, units or any(n.startswith(UNITS_PREFIX) for n, _ in outputs))


def _tensor(tensor: dict, binary: bytes, runtime: Runtime) -> np.ndarray:
    field = "inputs[0]"
    if tensor.get("name") != INPUT:
        raise InvalidInputError(f"{field}.name", f"must be {INPUT!r} (GET /v2/models/{runtime.name} lists it)")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInputError(f"{field}.datatype", f"must be one of {', '.join(DATATYPES)}; got {datatype!r}")
    shape = tensor.get("shape")
    item = list(runtime.item_shape)
    wanted = "[N, " + ", ".join(map(str, item)) + "]"
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[1:] != item
    ):
        raise InvalidInputError(f"{field}.shape", f"must be {wanted}; got {shape!r}")
    if not 1 <= shape[0] <= MAX_BATCH:
        raise InvalidInputError(f"{field}.shape", f"N must be 1 to {MAX_BATCH}; got {shape[0]}")
    count = int(np.prod(shape))
    size = _parameters(tensor, field).get("binary_data_size")
    if size is not None:
        itemsize = np.dtype(WIRE[datatype]).itemsize
        if not isinstance(size, int) or size != count * itemsize or size > len(binary):
            raise InvalidInputError(
                f"{field}.parameters.binary_data_size",
                f"must be {count * itemsize} ({count} {datatype} values) and the bytes must follow the JSON; "
                f"got {size!r} with {len(binary)} bytes after it",
            )
        values = np.frombuffer(binary, dtype=WIRE[datatype], count=count)
    else:
        if "data" not in tensor:
            raise InvalidInputError(f"{field}.data", "is required (or binary data with parameters.binary_data_size)")
        values = _json_values(tensor["data"], f"{field}.data")
        if values.size != count:
            raise InvalidInputError(f"{field}.data", f"must hold {count} values for shape {shape}; got {values.size}")
    x = values.reshape(shape)
    return check_batch(
        x, field=f"{field}.data", item_shape=runtime.item_shape, low=runtime.value_range[0], high=runtime.value_range[1]
    )


def _json_values(data, field: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInputError(field, "must be a list of numbers (flat, or nested as the shape says)")
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidInputError(field, "must be nested evenly, as the shape says") from None
    if values.dtype.kind not in "iuf":
        raise InvalidInputError(field, "must contain only numbers")
    return values.ravel()


def output_arrays(runtime: Runtime, prediction: Prediction, names: list[str]) -> dict[str, np.ndarray]:
    """Each named output of ``prediction`` as an array (row-major, the output's datatype)."""
    arrays: dict[str, np.ndarray] = {}
    n = len(prediction.probabilities)
    for name in names:
        if name == "probabilities":
            array = prediction.probabilities.astype(np.float32)
        elif name == "label":
            array = prediction.labels.astype(np.int64)
        elif name == "sparsity":
            columns = [prediction.layer_sparsity[layer] for layer in runtime.layers]
            array = np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((n, 0), np.float32)
        elif name == "sparsity_overall":
            array = prediction.overall.astype(np.float32)
        elif name == "typicality_score":
            array = prediction.scores.astype(np.float32)
        elif name == "atypical":
            array = prediction.atypical.astype(bool)
        elif name == "weight_sparsity":
            array = np.full(n, prediction.weights if prediction.weights is not None else np.nan, np.float32)
        else:
            array = prediction.shares[name[len(UNITS_PREFIX) :]].astype(np.float32)
        arrays[name] = array
    return arrays


def infer_response(runtime: Runtime, prediction: Prediction, request: InferRequest) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it (else None)."""
    specs = {spec.name: spec for spec in output_specs(runtime, units=True)}
    arrays = output_arrays(runtime, prediction, [name for name, _ in request.outputs])
    outputs, chunks = [], []
    for name, binary in request.outputs:
        array, spec = arrays[name], specs[name]
        entry = {"name": name, "datatype": spec.datatype, "shape": list(array.shape)}
        parameters = dict(spec.parameters or {})
        if binary:
            raw = np.ascontiguousarray(array, dtype=WIRE[spec.datatype]).tobytes()
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = array.ravel()
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    answer = {"model_name": runtime.name, "model_version": runtime.version, "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
