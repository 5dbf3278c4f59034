"""Plain BentoML for the comparison: one service, one API, the ONNX file on ONNX Runtime, no introspection."""

from __future__ import annotations

import bentoml
import numpy as np
from onnx_session import open_session, run


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Digits:
    def __init__(self) -> None:
        self.session = open_session()

    @bentoml.api
    def predict(self, input: np.ndarray) -> np.ndarray:
        return run(self.session, input)
