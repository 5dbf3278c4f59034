"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in the fuzz test: bodies for /mnist/predict_batch.

schemathesis cannot make an ``application/x-npy`` body by itself; this strategy draws real .npy files
(uint8 and float32 image stacks, some with the wrong shape or dtype), the same cut short, and bytes that
are no .npy at all. The service must answer each with 200 or a documented 400, never a 5xx."""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _stack(count: int, dtype: str, rows: int, seed: int) -> bytes:
    values = np.random.default_rng(seed).random((count, rows, 28))
    return _npy((values * 255).astype(np.uint8) if dtype == "uint8" else values.astype(dtype))


_npy_files = st.builds(
    _stack,
    count=st.integers(1, 3),
    dtype=st.sampled_from(["uint8", "float32", "float64", "int16"]),
    rows=st.sampled_from([28, 28, 27]),
    seed=st.integers(0, 2**16),
)
NPY_BODIES = st.one_of(
    _npy_files,
    st.tuples(_npy_files, st.integers(0, 2000)).map(lambda cut: cut[0][: cut[1]]),  # truncated
    st.binary(max_size=4096),
)
schemathesis.openapi.media_type("application/x-npy", NPY_BODIES)
