"""An MLP on a tabular data set that ships with scikit-learn: the UCI optical digits, 1,797 rows of 64
integer features (0-16), 10 classes. Its hidden layers sit in a nested ``Sequential`` block with a
capped ReLU (``ReLU(max_value=6)``), a GELU layer follows (not probed: GELU has no exact zeros), and the
model outputs logits (the service takes their softmax).

    python examples/digits_mlp.py --out examples/out            # seconds
    python -m modelstore register examples/out/digits_mlp.keras --name digits_mlp \\
        --calibration examples/out/digits_mlp_calibration.npy --labels examples/out/digits_mlp_labels.npy \\
        --input-range 0 16

Split (stratified, seeded): 50% training, 33% calibration, 17% unseen by both (about 300 rows, enough to
measure a false-alarm rate near 1%; breast cancer or wine, at 569 and 178 rows, are too small for that).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
import numpy as np

from examples.common import finish, parser, stratified_parts

NAME = "digits_mlp"


def build(x_train: np.ndarray, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    scale = keras.layers.Normalization(name="standardize")
    scale.adapt(x_train)
    block = keras.Sequential(
        [
            keras.Input(shape=(x_train.shape[1],)),
            keras.layers.Dense(64, activation="relu", name="hidden1"),
            keras.layers.Dense(32, name="hidden2_linear"),
            keras.layers.ReLU(max_value=6.0, name="hidden2"),
        ],
        name="block",
    )
    x = block(scale(inputs))
    x = keras.layers.Dense(16, activation="gelu", name="gelu_head")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name=NAME)


def main(argv: list[str] | None = None) -> int:
    from sklearn.datasets import load_digits

    args = parser(__doc__, epochs=40).parse_args(argv)
    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    train, calibration, unseen = stratified_parts(y, (0.5, 0.33, 0.17), args.seed)
    model = build(x[train], seed=args.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x[train], y[train], epochs=args.epochs, batch_size=32, shuffle=True, verbose=0)
    return finish(NAME, model, x, y, calibration, unseen, args, "rows")


if __name__ == "__main__":
    raise SystemExit(main())
