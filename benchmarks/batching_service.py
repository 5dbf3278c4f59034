"""An experiment, not the product: the same probe behind a BentoML adaptive-batching endpoint.

``make bench`` runs it beside the real service to measure whether adaptive batching would help
one-image requests. It returns bare arrays (probabilities, per-layer sparsity, overall) because a
batchable endpoint must map a batch to a batch; the product's response shape does not fit that.
"""

from __future__ import annotations

import bentoml
import numpy as np

from modelstore.kinds import load, load_card


@bentoml.service(name="batching_experiment")
class BatchingService:
    mnist_model = bentoml.models.BentoModel("mnist_cnn:latest")

    def __init__(self) -> None:
        stored = self.mnist_model
        self.mnist = load(stored, load_card(str(stored.tag), stored.info.metadata))
        self.mnist.warm_up()

    @bentoml.api(route="/mnist/predict", batchable=True, max_batch_size=64, max_latency_ms=20)
    def predict(self, images: np.ndarray) -> np.ndarray:
        result = self.mnist.predict(images.astype(np.float32))  # a Prediction: the probe's pass and typicality
        layers = np.stack(list(result.layer_sparsity.values()), axis=1)
        return np.concatenate([result.probabilities, layers, result.overall[:, None]], axis=1)
