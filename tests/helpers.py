"""Small model builders for unit tests (fixed weights, so expected zeros are known by hand), and
digits as PNG uploads."""

from __future__ import annotations

import io

import keras
import numpy as np
from PIL import Image


def png_bytes(a: np.ndarray, scale: int = 4) -> bytes:
    """A 28x28 image in [0, 1] as a PNG, enlarged ``scale`` times (an upload is any size)."""
    img = Image.fromarray((a * 255).astype(np.uint8)).resize((28 * scale, 28 * scale))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


NPY = {"content-type": "application/x-npy"}


def npy_bytes(a: np.ndarray) -> bytes:
    """``a`` as the body of a ``predict_batch`` request."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, dtype=np.float32))
    return buf.getvalue()


def dense_model(kernel: np.ndarray, bias: np.ndarray | None = None) -> keras.Model:
    """Input(F) -> Dense(U, relu) with the given weights -> Dense(2, softmax)."""
    features, units = kernel.shape
    inputs = keras.Input(shape=(features,))
    hidden = keras.layers.Dense(units, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(hidden)
    model = keras.Model(inputs, outputs)
    model.get_layer("hidden").set_weights([kernel, np.zeros(units) if bias is None else bias])
    return model


def conv_dense_model() -> keras.Model:
    """Input(4, 4) -> Reshape -> Conv2D(2, 1x1, relu; channel 0 = +x, channel 1 = -x) -> Flatten
    -> Dense(4, relu; unit j = +/- sum) -> Dense(2, softmax)."""
    inputs = keras.Input(shape=(4, 4))
    x = keras.layers.Reshape((4, 4, 1))(inputs)
    x = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").set_weights([np.array([[[[1.0, -1.0]]]]), np.zeros(2)])
    dense_kernel = np.zeros((32, 4))
    dense_kernel[:, 0] = 1.0  # fires when any conv output is positive
    dense_kernel[:, 1] = -1.0  # never fires (ReLU outputs are >= 0)
    model.get_layer("dense").set_weights([dense_kernel, np.array([0.0, 0.0, 1.0, -1.0])])
    return model


def unit_firing_scores(shares: dict[str, np.ndarray], state_path: str, layers: list[str]) -> np.ndarray:
    """The unit-firing score recomputed layer by layer from the saved arrays, not through the core's fused
    form: per layer, the smallest squared distance of the whitened shares to a whitened class centre,
    standardised by the layer's saved mean and spread, summed over the layers."""
    with np.load(state_path, allow_pickle=False) as state:
        whiten, centres, loc, scale = state["whiten"], state["centres"], state["loc"], state["scale"]
    total, start = np.zeros(len(next(iter(shares.values())))), 0
    for i, name in enumerate(layers):
        block = slice(start, start + shares[name].shape[1])
        z = shares[name].astype(np.float64) @ whiten[block, block]
        distances = ((z[:, None, :] - centres[i][None, :, block]) ** 2).sum(axis=2).min(axis=1)
        total += (distances - loc[i]) / scale[i]
        start = block.stop
    return total


def without_versions(exposition: str) -> str:
    """A /metrics text with every series' ``version`` label left out (for checks that are about one version)."""
    import re

    return re.sub(r',version="[^"]*"', "", exposition)


def asgi_request(app, method: str, path: str, **options):
    """One request to an ASGI app in process (httpx's ASGI transport), answered as an ``httpx.Response``."""
    import asyncio

    import httpx

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **options)

    return asyncio.run(go())
