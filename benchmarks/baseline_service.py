"""The baseline the issue compares against: a plain BentoML service calling ``model.predict`` per
request on the same stored model, with no sparsity work at all."""

from __future__ import annotations

import bentoml
import numpy as np


@bentoml.service(name="baseline_predict")
class BaselineService:
    mnist_model = bentoml.models.BentoModel("mnist_cnn:latest")

    def __init__(self) -> None:
        import keras

        self.model = keras.models.load_model(self.mnist_model.path_of("model.keras"), compile=False)

    @bentoml.api(route="/mnist/predict")
    def predict(self, images: list[list[list[float]]]) -> dict:
        probabilities = self.model.predict(np.asarray(images, dtype=np.float32), verbose=0)
        return {"labels": probabilities.argmax(axis=1).tolist()}
