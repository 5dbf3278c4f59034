"""The ONNX path's core: which nodes are probed, the in-graph counts against an independent count from ONNX
Runtime with the activations returned as outputs, and every refusal (one line each)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsity import onnx_graph
from sparsity.onnx_graph import OnnxModelError
from sparsity.onnx_probe import OnnxProbe, session
from tests.onnx_models import calibration, cnn, tiny

FLOAT = TensorProto.FLOAT


def independent(model: onnx.ModelProto, tensors: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The probed tensors themselves, from a plain ONNX Runtime run with them added as outputs."""
    plain = session(onnx_graph.with_outputs(model, tensors))
    name = model.graph.input[0].name
    return dict(zip(tensors, plain.run(tensors, {name: x}), strict=True))


def test_relu_clip_and_max_are_probed_gelu_is_reported_and_units_follow_the_convention():
    probe = OnnxProbe(cnn())
    assert [(p.name, p.op) for p in probe.layers] == [("relu1", "Relu"), ("relu6", "Clip(0, 6)"), ("max0", "Max(x, 0)")]
    assert [(n.name, n.activation) for n in probe.not_probed] == [("gelu", "Gelu")]
    # conv outputs (N, C, H, W): the channel axis; the dense output (N, 8): its last axis
    assert [(p.units, p.size, p.axis, p.rank) for p in probe.layers] == [
        (4, 4 * 12 * 12, 1, 3),
        (6, 6 * 6 * 6, 1, 3),
        (8, 8, 1, 1),
    ]
    assert probe.classes == 3 and probe.item_shape == (1, 12, 12)


@pytest.mark.parametrize("opset", [9, 13, 20])
def test_in_graph_counts_equal_an_independent_count(opset):
    model = cnn(seed=opset, opset=opset)
    x = calibration(40, seed=opset)
    probe = OnnxProbe(model)
    result = probe.run(x)
    acts = independent(model, [p.tensor for p in probe.layers], x)
    for p in probe.layers:
        value = acts[p.tensor]
        zeros = np.count_nonzero(value.reshape(len(x), -1) == 0, axis=1)
        np.testing.assert_array_equal(result.layer_sparsity[p.name], zeros / p.size)
        on = (value > 0).sum(axis=(2, 3)) if value.ndim == 4 else (value > 0)
        np.testing.assert_array_equal(result.fired[p.name], on > 0)
        start = sum(q.units for q in probe.layers[: probe.layers.index(p)])
        np.testing.assert_allclose(result.shares[:, start : start + p.units], on / (p.size // p.units), rtol=1e-6)
    all_zeros = sum(np.count_nonzero(acts[p.tensor].reshape(len(x), -1) == 0, axis=1) for p in probe.layers)
    np.testing.assert_array_equal(result.overall, all_zeros / sum(p.size for p in probe.layers))
    plain = session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(result.probabilities, plain, rtol=1e-5, atol=1e-6)


def test_unnamed_nodes_are_named_by_their_output_and_a_fixed_batch_of_one_runs_item_by_item():
    free = OnnxProbe(cnn(names=False))
    assert [p.name for p in free.layers] == ["r1", "r2", "h2"] and [n.name for n in free.not_probed] == ["h1"]
    fixed = OnnxProbe(cnn(names=False, batch=1))
    x = calibration(5)
    a, b = free.run(x), fixed.run(x)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5)
    np.testing.assert_array_equal(a.overall, b.overall)
    with pytest.raises(OnnxModelError, match="batch dimension fixed at 4"):
        OnnxProbe(cnn(batch=4))


def test_relus_inside_a_local_function_are_counted_and_inside_a_loop_body_reported():
    relu_fn = helper.make_function(
        "local", "Block", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    w = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32) - 0.5, "w")
    model = tiny(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
            helper.make_node("Block", ["h"], ["y"], name="block", domain="local"),
        ],
        [helper.make_tensor_value_info("x", FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["n", 3])],
        [w],
    )
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.functions.append(relu_fn)
    onnx.checker.check_model(model)
    assert onnx_graph.model_problems(model) == []  # a local function's domain is not a custom-op domain
    x = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    result = OnnxProbe(model).run(x)
    assert len(result.layer_sparsity) == 1
    np.testing.assert_array_equal(next(iter(result.layer_sparsity.values())), [2 / 3, 1.0])

    body = helper.make_graph(
        [
            helper.make_node("Relu", ["v_in"], ["v_out"], name="inner_relu"),
            helper.make_node("Identity", ["c"], ["c_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", FLOAT, None),
        ],
    )
    looped = onnx_graph.survey(
        tiny(
            [
                helper.make_node("Relu", ["x"], ["r"], name="top"),
                helper.make_node("Loop", ["", "", "r"], ["y"], name="repeat", body=body),
            ],
            [helper.make_tensor_value_info("x", FLOAT, ["n", 4])],
            [helper.make_tensor_value_info("y", FLOAT, ["n", 4])],
        )
    )
    assert [p.name for p in looped.probed] == ["top"]
    assert [(n.name, n.activation) for n in looped.not_probed] == [("repeat/inner_relu", "Relu inside Loop")]


def test_logits_and_capped_and_thresholded_relus():
    w = numpy_helper.from_array(np.array([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0]], np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("ThresholdedRelu", ["h"], ["t"], name="fat", alpha=0.1),
        helper.make_node("LeakyRelu", ["t"], ["logits"], name="leaky"),
    ]
    model = tiny(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("logits", FLOAT, ["n", 3])],
        [w],
    )
    probe = OnnxProbe(model, output="logits")
    result = probe.run(np.array([[1.0, 0.0], [0.05, 0.0]], np.float32))
    assert [p.op for p in probe.layers] == ["ThresholdedRelu(0.1)"] and probe.not_probed[0].activation == "LeakyRelu"
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-6)  # softmax added in the graph
    np.testing.assert_array_equal(result.layer_sparsity["fat"], [1 / 3, 1.0])  # 0.05 is below the threshold


def test_a_clip_with_another_lower_bound_is_no_relu():
    lows = numpy_helper.from_array(np.array(-1.0, np.float32), "low")
    model = tiny(
        [helper.make_node("Clip", ["x", "low"], ["c"]), helper.make_node("Softmax", ["c"], ["y"], axis=1)],
        [helper.make_tensor_value_info("x", FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["n", 3])],
        [lows],
    )
    with pytest.raises(OnnxModelError, match="no ReLU-family node to probe"):
        OnnxProbe(model)


def _write(tmp_path, model: onnx.ModelProto, name: str = "m.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def test_refusals_are_one_line_each(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a protobuf at all \xff" * 10)
    assert "is not an ONNX model" in onnx_graph.problems(garbage)[0]

    broken = cnn()
    broken.graph.node[0].input[0] = "nowhere"
    assert "is not valid ONNX (onnx.checker" in onnx_graph.problems(_write(tmp_path, broken))[0]

    custom = cnn()
    custom.graph.node[1].domain = "com.example.fast"
    custom.opset_import.append(helper.make_opsetid("com.example.fast", 1))
    assert any(
        "custom operator domains ['com.example.fast']" in p for p in onnx_graph.problems(_write(tmp_path, custom))
    )

    future = cnn()
    future.opset_import[0].version = 29
    found = onnx_graph.problems(_write(tmp_path, future))
    assert found and "opset 29; ONNX Runtime here runs opsets 9 to 28" in found[-1]

    external = cnn()
    weight = external.graph.initializer[0]
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../etc/passwd")
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    assert "keeps tensors in external files" in onnx_graph.problems(_write(tmp_path, external))[0]

    for problems in (onnx_graph.problems(p) for p in (garbage, _write(tmp_path, custom))):
        assert all("\n" not in p for p in problems)


def test_models_that_are_not_one_input_classifiers_are_refused():
    two_inputs = tiny(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        [helper.make_tensor_value_info(n, FLOAT, ["n", 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", FLOAT, ["n", 3])],
    )
    with pytest.raises(OnnxModelError, match=r"the model has 2 inputs \(a, b\); one input is served"):
        onnx_graph.survey(two_inputs)
    one_score = tiny(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("ReduceSum", ["r"], ["y"], keepdims=1)],
        [helper.make_tensor_value_info("x", FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["n", 1])],
        opset=11,
    )
    with pytest.raises(OnnxModelError, match=r"gives shape \(1,\) per input; a classifier outputs \(classes,\)"):
        OnnxProbe(one_score)
    two_scores = tiny(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])],
        [helper.make_tensor_value_info("x", FLOAT, ["n", 3])],
        [helper.make_tensor_value_info(n, FLOAT, ["n", 3]) for n in ("r", "y")],
    )
    with pytest.raises(OnnxModelError, match="one float output of class scores"):
        onnx_graph.survey(two_scores)
    tokens = tiny(
        [helper.make_node("Cast", ["x"], ["f"], to=FLOAT), helper.make_node("Relu", ["f"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["n", 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["n", 3])],
    )
    with pytest.raises(OnnxModelError, match="input 'x' is INT64; the served input is a float tensor"):
        onnx_graph.survey(tokens)
    free = tiny(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", FLOAT, ["n", "features"])],
        [helper.make_tensor_value_info("y", FLOAT, ["n", "features"])],
    )
    with pytest.raises(OnnxModelError, match=r"shape \(\?, \?\); every dimension but the batch must be fixed"):
        onnx_graph.survey(free)


def test_the_opset_bounds_are_what_onnx_runtime_runs():
    low, high = onnx_graph.OPSETS
    session(cnn(opset=high))
    with pytest.raises(OnnxModelError, match="ONNX Runtime cannot run the model"):
        model = cnn(opset=high)
        model.opset_import[0].version = high + 1
        session(model)
    assert low == 9  # Sign, which the counting copy uses, is an operator from opset 9


def test_one_intra_op_thread_and_bad_inputs_are_refused_before_running():
    probe = OnnxProbe(cnn(), value_range=(0.0, 1.0))
    assert probe._session.get_session_options().intra_op_num_threads == 1
    from sparsity.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="inputs"):
        probe.run(np.full((1, 1, 12, 12), 2.0, np.float32))
    with pytest.raises(InvalidInputError):
        probe.run(np.zeros((1, 12, 12), np.float32))


def test_a_dense_layer_along_a_sequence_has_its_units_on_the_last_axis():
    w = numpy_helper.from_array(np.array([[1.0, -1.0, 0.5], [-0.5, 1.0, 1.0]], np.float32), "w")
    model = tiny(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("ReduceMean", ["r"], ["y"], axes=[1], keepdims=0),
        ],
        [helper.make_tensor_value_info("x", FLOAT, ["n", 5, 2])],
        [helper.make_tensor_value_info("y", FLOAT, ["n", 3])],
        [w],
        opset=17,
    )
    probe = OnnxProbe(model)
    (layer,) = probe.layers
    assert (layer.units, layer.size, layer.axis, layer.rank) == (3, 15, 2, 2)
    x = np.random.default_rng(0).normal(size=(4, 5, 2)).astype(np.float32)
    result = probe.run(x)
    on = (np.maximum(x @ np.array([[1.0, -1.0, 0.5], [-0.5, 1.0, 1.0]], np.float32), 0) > 0).sum(axis=1)
    np.testing.assert_allclose(result.shares, on / 5)


def test_max_with_the_zero_first_after_a_conv_counts_channels_and_a_node_named_all_is_renamed():
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    model = tiny(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
            helper.make_node("Max", ["zero", "c"], ["m"], name="all"),
            helper.make_node("Flatten", ["m"], ["f"]),
            helper.make_node("Softmax", ["f"], ["y"], axis=1),
        ],
        [helper.make_tensor_value_info("x", FLOAT, ["n", 1, 3, 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["n", 18])],
        [w, zero],
    )
    (layer,) = OnnxProbe(model).layers
    assert (layer.name, layer.op, layer.units, layer.axis) == ("m", "Max(x, 0)", 2, 1)
