"""KServe for the comparison: one ``kserve.Model`` running the ONNX file, answering both the V1 route
(``{"instances": ...}`` -> ``{"predictions": ...}``) and the V2 (Open Inference Protocol) route.

KServe 0.21's REST server binds 0.0.0.0 with no option to change it; here uvicorn's ``Config`` is wrapped so
that it listens on 127.0.0.1 only. Latency logging and gRPC are off. Run as
``python kserve_server.py --http_port PORT`` with ``PEER_ONNX_FILE`` set."""

from __future__ import annotations

import uuid

import uvicorn

_Config = uvicorn.Config


class _LoopbackConfig(_Config):
    def __init__(self, *args, **kwargs) -> None:
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


uvicorn.Config = _LoopbackConfig

import kserve  # noqa: E402 - after the wrap, which its REST server reads at import
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from onnx_session import open_session, run  # noqa: E402


class OnnxDigits(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.session = open_session()
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            probabilities = run(self.session, payload.inputs[0].as_numpy())
            output = InferOutput(name="probabilities", shape=list(probabilities.shape), datatype="FP32")
            output.set_data_from_numpy(probabilities, binary_data=False)
            response_id = payload.id or str(uuid.uuid4())  # KServe's response model requires one
            return InferResponse(model_name=self.name, infer_outputs=[output], response_id=response_id)
        return {"predictions": run(self.session, payload["instances"]).tolist()}


if __name__ == "__main__":
    kserve.ModelServer(enable_grpc=False, enable_latency_logging=False, workers=1).start([OnnxDigits("mnist")])
