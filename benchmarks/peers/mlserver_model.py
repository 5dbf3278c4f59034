"""MLServer's custom runtime for the comparison: one ``MLModel`` running the ONNX file (``parameters.uri``)."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from onnx_session import open_session, run


class OnnxDigits(MLModel):
    async def load(self) -> bool:
        self._session = open_session(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        probabilities = run(self._session, x)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", probabilities)]
        )
