"""A scikit-learn MLP exported to ONNX with skl2onnx: the way to serve a network from any framework.

The UCI optical digits that ship with scikit-learn (1,797 rows of 64 features, 0-16), split as
``digits_mlp.py`` splits them; a ``StandardScaler`` then an ``MLPClassifier`` with two ReLU layers (64
and 32 units), converted with ``zipmap`` off so that the class probabilities are one float tensor (the
integer ``label`` output beside it is ignored). The graph has the ``ai.onnx.ml`` ``Scaler`` in front:
standard ONNX operators only, as the service requires.

    python examples/digits_onnx.py --out examples/out                 # seconds
    python -m modelstore register examples/out/digits_onnx.onnx --name digits_onnx \\
        --calibration examples/out/digits_onnx_calibration.npy --labels examples/out/digits_onnx_labels.npy \\
        --input-range 0 16
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from examples.common import finish_with, parser, stratified_parts

NAME = "digits_onnx"
OPSET = 17


def main(argv: list[str] | None = None) -> int:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    args = parser(__doc__, epochs=400).parse_args(argv)
    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    train, calibration, unseen = stratified_parts(y, (0.5, 0.33, 0.17), args.seed)
    classifier = MLPClassifier((64, 32), activation="relu", max_iter=args.epochs, random_state=args.seed)
    model = make_pipeline(StandardScaler(), classifier).fit(x[train], y[train])
    exported = to_onnx(model, x[:1], options={id(classifier): {"zipmap": False}}, target_opset=OPSET)
    return finish_with(
        args.out / f"{NAME}.onnx",
        model.predict_proba,
        lambda path: path.write_bytes(exported.SerializeToString()),
        x,
        y,
        calibration,
        unseen,
        args,
        "rows",
    )


if __name__ == "__main__":
    raise SystemExit(main())
