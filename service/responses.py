"""Response bodies built from the core's results (one item per input, in input order)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import orjson

from service.runtime import IrisResult, Typicality
from service.schemas import IrisResponse, MnistResponse, input_error
from sparsity.errors import InvalidInputError
from sparsity.result import ProbeResult


@contextmanager
def refusing_invalid_input() -> Iterator[None]:
    """Turn the core's InvalidInputError into the API's 400 (a pydantic-shaped ValidationError)."""
    try:
        yield
    except InvalidInputError as exc:
        raise input_error((exc.field,), exc.rule) from None


def _typicality(typicality: Typicality) -> list[dict]:
    return [
        {"score": score, "atypical": flag}
        for score, flag in zip(typicality.scores.tolist(), typicality.atypical.tolist(), strict=True)
    ]


def _mnist_body(tag: str, result: ProbeResult, typicality: Typicality) -> dict:
    names = list(result.layer_sparsity)
    per_layer = np.stack([result.layer_sparsity[n] for n in names], axis=1).tolist()
    return {
        "model": tag,
        "predictions": [
            {
                "label": label,
                "probabilities": probs,
                "sparsity": {"overall": overall, "layers": dict(zip(names, layers, strict=True))},
                "typicality": typ,
            }
            for label, probs, overall, layers, typ in zip(
                result.labels.tolist(),
                result.probabilities.tolist(),
                result.overall.tolist(),
                per_layer,
                _typicality(typicality),
                strict=True,
            )
        ],
    }


def mnist_response(tag: str, result: ProbeResult, typicality: Typicality) -> MnistResponse:
    return MnistResponse.model_validate(_mnist_body(tag, result, typicality))


def mnist_response_json(tag: str, result: ProbeResult, typicality: Typicality) -> bytes:
    """The same body as :func:`mnist_response`, serialized directly (for the routes that answer
    without BentoML's response model). orjson: 256 predictions in well under the 3 ms of json.dumps."""
    return orjson.dumps(_mnist_body(tag, result, typicality))


def iris_response(tag: str, class_names: list[str], result: IrisResult) -> IrisResponse:
    return IrisResponse.model_validate(
        {
            "model": tag,
            "predictions": [
                {
                    "label": int(label),
                    "name": class_names[int(label)],
                    "probabilities": probs.tolist(),
                    "sparsity": {"weights": result.sparsity.weights, "contributions": float(contrib)},
                    "typicality": typ,
                }
                for label, probs, contrib, typ in zip(
                    result.labels,
                    result.probabilities,
                    result.sparsity.contributions,
                    _typicality(result.typicality),
                    strict=True,
                )
            ],
        }
    )
