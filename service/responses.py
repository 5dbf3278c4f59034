"""Response bodies built from the core's results (one item per input, in input order)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from service.runtime import IrisResult
from service.schemas import IrisResponse, MnistResponse, input_error
from sparsity import InvalidInputError, ProbeResult


@contextmanager
def refusing_invalid_input() -> Iterator[None]:
    """Turn the core's InvalidInputError into the API's 400 (a pydantic-shaped ValidationError)."""
    try:
        yield
    except InvalidInputError as exc:
        raise input_error((exc.field,), exc.rule) from None


def mnist_response(tag: str, result: ProbeResult) -> MnistResponse:
    names = list(result.layer_sparsity)
    per_layer = np.stack([result.layer_sparsity[n] for n in names], axis=1).tolist()
    return MnistResponse.model_validate(
        {
            "model": tag,
            "predictions": [
                {
                    "label": int(label),
                    "probabilities": probs.tolist(),
                    "sparsity": {"overall": float(overall), "layers": dict(zip(names, layers, strict=True))},
                }
                for label, probs, overall, layers in zip(
                    result.labels, result.probabilities, result.overall, per_layer, strict=True
                )
            ],
        }
    )


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
                }
                for label, probs, contrib in zip(
                    result.labels, result.probabilities, result.sparsity.contributions, strict=True
                )
            ],
        }
    )
