"""A Keras model's ONNX twin (tf2onnx from an inference-only clone) counts the zeros Keras counts, under the
Keras layer names, and registration keeps it only when it does."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelstore.card import ModelCardError
from modelstore.kinds import keras_relu
from modelstore.kinds.keras_relu import KerasReluRuntime, KerasTwinRuntime, compare_twin, keras_runtime
from modelstore.register import Calibration, register_relu
from sparsity.keras_onnx import ConversionError, convert
from sparsity.onnx_probe import OnnxProbe
from sparsity.probe import SparsityProbe
from tests.tools import ROOT


def _cnn() -> keras.Model:
    """Everything the clone must drop or keep: augmentation, dropout, an L1 activity term, an adapted
    Normalization (state derived from weights), a nested block, a capped ReLU layer and a GELU head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12), name="image")
    norm = keras.layers.Normalization(axis=None, name="standardize")
    norm.adapt(np.random.default_rng(0).random((64, 12, 12)).astype("float32") * 3 + 1)
    x = norm(inputs)
    x = keras.layers.Reshape((12, 12, 1))(x)
    x = keras.layers.RandomRotation(0.1)(x)
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D()(x)
    block_in = keras.Input((6, 6, 3))
    y = keras.layers.Conv2D(4, 3, activation="relu", activity_regularizer=keras.regularizers.L1(1e-3), name="conv2")(
        block_in
    )
    x = keras.Model(block_in, y, name="block")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(6, name="dense")(x)
    x = keras.layers.ReLU(max_value=6.0, name="capped")(x)
    x = keras.layers.Dense(5, activation="gelu", name="gelu_head")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probabilities")(x))


@pytest.fixture(scope="module")
def cnn():
    model = _cnn()
    probe = SparsityProbe(model, field="calibration")
    x = np.random.default_rng(1).random((300, 12, 12), dtype=np.float32) * 4
    return model, probe, x


def test_the_twin_counts_every_zero_keras_counts_under_the_keras_names(cnn):
    model, probe, x = cnn
    names = [layer.name for layer in probe.layers]
    assert names == ["conv1", "block/conv2", "capped"]
    twin = convert(model, names)
    twin_probe = OnnxProbe(twin.model, field="calibration", output=probe.output)
    assert [(layer.name, layer.units, layer.size) for layer in twin_probe.layers] == [
        (layer.name, layer.units, layer.size) for layer in probe.layers
    ]
    ops = {node.op_type for node in twin.model.graph.node}
    assert "Erf" in ops and not ops & {"RandomUniform", "Erfc"}  # no augmentation; GELU's Erfc rewritten
    keras_result, twin_result = probe.run(x), twin_probe.run(x)
    for layer in probe.layers:
        np.testing.assert_array_equal(
            np.rint(twin_result.layer_sparsity[layer.name] * layer.size),
            np.rint(keras_result.layer_sparsity[layer.name] * layer.size),
        )
        np.testing.assert_array_equal(twin_result.fired[layer.name], keras_result.fired[layer.name])
    assert 0 < float(np.mean(keras_result.layer_sparsity["conv1"])) < 1  # the counts are not all trivial
    np.testing.assert_allclose(twin_result.probabilities, keras_result.probabilities, atol=1e-5)
    check, problem = compare_twin(probe, twin_probe, x, keras_result)
    assert problem is None and check.items == 300 and check.max_probability_difference <= 1e-5
    assert check.zero_counts_equal and check.rounding_ties == 0


def test_fatrelu_layers_become_one_thresholded_relu_node_each_and_count_the_same_zeros():
    from training.models import LayerSpec, build_cnn

    model = build_cnn(LayerSpec(thresholds=(("conv2", 0.02), ("dense", 0.05))), seed=3, widths=(4, 6, 8))
    probe = SparsityProbe(model, field="calibration")
    twin = convert(model, [layer.name for layer in probe.layers]).model
    fused = {node.name: node for node in twin.graph.node if node.op_type == "ThresholdedRelu"}
    assert sorted(fused) == ["conv2", "dense"]
    assert onnx.helper.get_attribute_value(fused["dense"].attribute[0]) == pytest.approx(0.05)
    assert not {node.op_type for node in twin.graph.node} & {"Greater", "Where", "Not", "ConstantOfShape"}
    onnx.checker.check_model(twin)
    x = np.random.default_rng(2).random((200, 28, 28), dtype=np.float32)
    keras_result = probe.run(x)
    check, problem = compare_twin(probe, OnnxProbe(twin, field="calibration", output=probe.output), x, keras_result)
    assert problem is None and check.zero_counts_equal
    assert 0 < float(np.mean(keras_result.layer_sparsity["dense"])) < 1


def test_a_layer_without_a_node_and_a_node_without_a_layer_are_named(cnn):
    model, _, _ = cnn
    with pytest.raises(ConversionError, match="from layer 'conv9'"):
        convert(model, ["conv1", "conv9", "capped"])
    with pytest.raises(ConversionError, match=r"no Keras layer explains: \S*/conv1_1/Relu$"):
        convert(model, ["block/conv2", "capped"])


def test_a_twin_that_counts_differently_is_refused_with_the_layer(cnn):
    model, probe, x = cnn
    twin = convert(model, [layer.name for layer in probe.layers]).model
    kernel = next(t for t in twin.graph.initializer if "/dense_1/" in t.name)  # the dense layer's weights
    kernel.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(kernel), kernel.name))
    check, problem = compare_twin(probe, OnnxProbe(twin, output=probe.output), x, probe.run(x))
    assert check is None
    assert "zero counts differ from Keras' in layer capped" in problem


def _register(tmp_path, model, x, name: str):
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return register_relu(path, name, Calibration(x), keras_relu.open_keras, input_range=(0.0, 4.0))


def test_registration_stores_the_checked_twin_and_serves_on_it(cnn, tmp_path, bentoml_home):
    import bentoml

    model, _, x = cnn
    tag, card = _register(tmp_path, model, x, "twin_cnn")
    assert card.engine == "onnxruntime" and card.engine_reason is None
    assert card.twin.check.items == len(x) and card.twin.converter.startswith("tf2onnx ")
    assert [layer.name for layer in card.twin.relu_layers] == ["conv1", "block/conv2", "capped"]
    assert any(line.startswith("  engine   onnxruntime") for line in card.summary_lines())
    stored = bentoml.models.get(tag)
    path = stored.path_of(card.MODEL_FILE)
    twin_runtime = keras_runtime(tag, card, path)
    assert isinstance(twin_runtime, KerasTwinRuntime) and twin_runtime.info["engine"] == "onnxruntime"
    tensorflow = keras_runtime(tag, card, path, keras_relu.LoadOptions(engine="tensorflow"))
    assert isinstance(tensorflow, KerasReluRuntime) and tensorflow.info["engine"] == "tensorflow"
    sample = x[:40]
    served, reference = twin_runtime.predict(sample), tensorflow.predict(sample)
    assert served.layer_sparsity.keys() == reference.layer_sparsity.keys()
    for name in reference.layer_sparsity:
        np.testing.assert_array_equal(served.layer_sparsity[name], reference.layer_sparsity[name])
    np.testing.assert_array_equal(served.atypical, reference.atypical)
    # a twin changed after registration is refused at load
    twin_file = os.path.join(stored.path, card.twin.file)
    with open(twin_file, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelCardError, match="not the registered twin"):
        keras_runtime(tag, card, path)


def test_without_a_twin_the_card_says_why_in_one_line(cnn, tmp_path, bentoml_home, monkeypatch):
    model, _, x = cnn

    def refuse(*_args, **_kwargs):
        raise ConversionError("tf2onnx 1.17.0 cannot convert the TensorFlow op(s) Erfc")

    monkeypatch.setattr("sparsity.keras_onnx.convert", refuse)
    _, card = _register(tmp_path, model, x, "tf_cnn")
    assert card.engine == "tensorflow" and card.twin is None
    assert card.engine_reason == "tf2onnx 1.17.0 cannot convert the TensorFlow op(s) Erfc"
    assert keras_relu.upgrade_reason(card) is None  # a reason given is not an old card


def test_a_process_serving_the_twin_never_imports_tensorflow(cnn, tmp_path, bentoml_home):
    model, _, x = cnn
    tag, _ = _register(tmp_path, model, x, "lean_cnn")
    code = (
        "import sys, numpy as np\n"
        "from modelstore.kinds import from_store\n"
        f"runtime = from_store({tag!r})\n"
        "runtime.predict(np.zeros((2, 12, 12), np.float32))\n"
        "print(runtime.engine, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["onnxruntime", "False", "False"]


def _tie_model() -> onnx.ModelProto:
    """input (N, 2) -> MatMul -> Relu "hidden" (3 units) -> MatMul -> Softmax; on [1, -1] unit 0's input is
    exactly 0 (a tie), units 1 and 2 get 2 and 3."""
    from onnx import TensorProto, helper

    w1 = numpy_helper.from_array(np.array([[1, 1, 2], [1, -1, -1]], np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((3, 2), np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["on"], name="hidden"),
        helper.make_node("MatMul", ["on", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tie",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize(("unit", "accepted"), [(0, True), (1, False)])
def test_a_difference_is_accepted_only_at_a_rounding_tie(unit, accepted):
    twin_probe = OnnxProbe(_tie_model(), output="probabilities")
    x = np.array([[1.0, -1.0], [0.5, 0.25]], np.float32)
    keras_like = twin_probe.run(x)  # what "Keras" computed: the same, but unit `unit` of item 0 on/off the other way
    keras_like.shares = keras_like.shares.copy()
    keras_like.shares[0, unit] = 1.0 - keras_like.shares[0, unit]
    keras_like.layer_sparsity = {"hidden": 1.0 - keras_like.shares.mean(axis=1)}
    probe = SimpleNamespace(layers=twin_probe.layers)
    check, problem = compare_twin(probe, twin_probe, x, keras_like)
    if accepted:
        assert problem is None
        assert (check.rounding_ties, check.tie_items, check.unit_counts_equal, check.zero_counts_equal) == (
            1,
            1,
            False,
            False,
        )
        assert check.activations == 6
    else:
        assert check is None
        assert problem == (
            "the ONNX twin's zero counts differ from Keras' in layer hidden on 1 of 2 items, beyond rounding ties"
        )
