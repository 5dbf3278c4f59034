"""The one ONNX Runtime session every peer uses: CPU, one intra-op and one inter-op thread, every graph
optimisation on. Standalone: imported by the peers' programs inside their own virtualenvs."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort


def open_session(path: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(path or os.environ["PEER_ONNX_FILE"], options, providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, x) -> np.ndarray:
    """Probabilities for a batch (N, 28, 28) of float32 digits."""
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x, dtype=np.float32)})[0]
