"""How a residual CNN of :mod:`training.resnet` is trained: the point (depth, width, placement, sparsity
method) and the fit. The served ``mnist_resnet`` (:mod:`training.mnist_resnet`) and the lab's depth study
(:mod:`lab.depth`) both train through here; TensorFlow is imported by the fit only."""

from __future__ import annotations

from dataclasses import dataclass

from sparsity.contract import DEFAULT_THRESHOLD

METHODS = ("relu", "l1", "rising-l1", "fatrelu")
"""Sparsity methods: none (plain ReLU), a constant L1 activity penalty, an L1 penalty whose strength rises
during training (ProSparse-style), and FATReLU (zero below a threshold, no penalty)."""
CENTER_L1 = 1e-5
"""The weakest strength of the first sweep's grid. Its chosen 3e-3, and 3e-4 and 1e-3, leave the residual
family at chance (every unit of the last stage silent); 1e-4 costs it several points (README, "Deeper
networks")."""
PEAK_LEARNING_RATE = 3e-3
"""Adam's rate at the start of its cosine decay to 0: batch norm's running statistics settle as the rate
falls (at a constant 1e-3 the held-back accuracy swung by 5 points from epoch to epoch)."""


@dataclass(frozen=True)
class DepthPoint:
    """One residual configuration and the sparsity method it is trained with."""

    depth: int = 1
    width: float = 1.0
    placement: str = "post"
    method: str = "l1"
    l1: float = CENTER_L1
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method in ("relu", "fatrelu") and self.l1:
            object.__setattr__(self, "l1", 0.0)  # these methods use no penalty: one key per configuration

    @property
    def key(self) -> str:
        method = {
            "relu": "relu",
            "l1": f"l1={self.l1:g}",
            "rising-l1": f"rising-l1={self.l1:g}",
            "fatrelu": f"fatrelu(t={self.threshold:g})",
        }[self.method]
        return f"{self.placement}/d{self.depth}/w{self.width:g}/{method}"

    def resnet_spec(self, augment: bool = True):
        from training.resnet import ResNetSpec

        schedule = "rising" if self.method == "rising-l1" else "constant"
        return ResNetSpec(self.depth, self.width, self.placement, augment=augment, l1_schedule=schedule)

    def layer_spec(self):
        from training.models import LayerSpec

        design = "fatrelu" if self.method == "fatrelu" else "relu"
        return LayerSpec(activity_l1=self.l1, design=design, threshold=self.threshold)


def fit_resnet(
    split, point: DepthPoint, seed: int, epochs: int, batch_size: int, limit: int, augment: bool, callbacks=()
):
    """Train one residual model of ``point`` on ``split``: Adam, its rate decaying from
    :data:`PEAK_LEARNING_RATE` to 0 along a cosine."""
    from training.resnet import RampL1

    callbacks = [*callbacks, RampL1()] if point.method == "rising-l1" else list(callbacks)
    rspec, spec = point.resnet_spec(augment), point.layer_spec()
    return fit_resnet_spec(split, rspec, spec, seed, epochs, batch_size, limit, callbacks)


def fit_resnet_spec(split, rspec, spec, seed: int, epochs: int, batch_size: int, limit: int, callbacks=()):
    """Train the residual model of ``rspec`` with activations made by ``spec`` (Adam on the cosine rate); a
    ``spec.ramp`` brings its penalties in over that share of training."""
    import keras

    from training.resnet import RampL1, build_resnet

    keras.utils.set_random_seed(seed)
    model = build_resnet(rspec, spec, seed)
    x, y = split.x_train, split.y_train
    if limit:
        x, y = x[:limit], y[:limit]
    steps = epochs * -(-len(x) // batch_size)
    rate = keras.optimizers.schedules.CosineDecay(PEAK_LEARNING_RATE, steps)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [*callbacks, RampL1(spec.ramp)] if spec.ramp > 0 else list(callbacks)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks)
    return model
