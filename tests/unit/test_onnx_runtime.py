"""The service's ONNX runtime over a registered card and its files, without a store: it answers as the
probe counts, and a file changed after registration is refused by the audit's check and by the runtime."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from PIL import Image, ImageDraw

from modelstore.card import ModelCardError
from modelstore.kinds import kind_of
from modelstore.kinds.onnx_relu import OnnxReluCard, OnnxReluRuntime, open_onnx
from modelstore.register import Calibration, RegistrationError, relu_card
from service.dataplane import DataPlane
from sparsity.detectors import STATE_FILE
from tests.onnx_models import calibration, cnn


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[OnnxReluCard, Path]:
    directory = tmp_path_factory.mktemp("onnx-model")
    path = directory / OnnxReluCard.MODEL_FILE
    path.write_bytes(cnn().SerializeToString())
    card, files = relu_card(path, Calibration(calibration(90)), open_onnx(path), input_range=(0.0, 1.0))
    (directory / STATE_FILE).write_bytes(files[STATE_FILE])
    return card, path


def test_the_runtime_answers_with_the_counts_and_the_cards_typicality(registered):
    card, path = registered
    runtime = OnnxReluRuntime("small:1", card, str(path))
    assert kind_of("onnx-relu").file_problems(str(path)) == []
    x = calibration(5, seed=3)
    answer = runtime.predict(x)
    assert runtime.layers == ["relu1", "relu6", "max0"] and list(answer.layer_sparsity) == runtime.layers
    assert [s.shape[1] for s in answer.shares.values()] == [4, 6, 8]
    np.testing.assert_array_equal(answer.atypical, answer.scores > card.typicality.threshold)
    np.testing.assert_array_equal(answer.fired["relu6"], answer.shares["relu6"] > 0)


def test_a_file_changed_after_registration_is_refused(registered, tmp_path):
    card, path = registered
    custom = cnn()
    custom.graph.node[1].domain = "com.example.fast"
    custom.opset_import.append(helper.make_opsetid("com.example.fast", 1))
    changed = tmp_path / OnnxReluCard.MODEL_FILE
    changed.write_bytes(custom.SerializeToString())
    (tmp_path / STATE_FILE).write_bytes((path.parent / STATE_FILE).read_bytes())
    assert "custom operator domains ['com.example.fast']" in kind_of("onnx-relu").file_problems(str(changed))[0]
    with pytest.raises(ModelCardError, match=r"model small:2: .*custom operator domains"):
        OnnxReluRuntime("small:2", card, str(changed))
    other = cnn(names=False)  # the same graph with other node names: the card's layers are not its layers
    changed.write_bytes(other.SerializeToString())
    with pytest.raises(ModelCardError, match="the card's ReLU-family tensors"):
        OnnxReluRuntime("small:3", card, str(changed))


def test_a_colour_channels_first_model_takes_uploaded_pictures_as_rgb_planes(tmp_path):
    path = tmp_path / OnnxReluCard.MODEL_FILE
    path.write_bytes(cnn(2, channels=3).SerializeToString())
    x = calibration(90, seed=3, channels=3)
    card, files = relu_card(path, Calibration(x), open_onnx(path), input_range=(0.0, 1.0), preprocessing="resize")
    (tmp_path / STATE_FILE).write_bytes(files[STATE_FILE])
    assert card.input_shape == [3, 12, 12] and card.image_shaped
    runtime = OnnxReluRuntime("colour:1", card, str(path))
    picture = Image.new("RGB", (12, 12), (255, 0, 0))  # red on the left, blue on the right: nothing to resize
    ImageDraw.Draw(picture).rectangle((6, 0, 11, 11), fill=(0, 0, 255))
    png = io.BytesIO()
    picture.save(png, format="PNG")
    sent = DataPlane(max_image_pixels=10**6).decode_picture(runtime, png.getvalue())
    planes = np.zeros((1, 3, 12, 12), np.float32)
    planes[0, 0, :, :6] = planes[0, 2, :, 6:] = 1.0
    np.testing.assert_array_equal(sent, planes)
    uploaded, direct = runtime.predict(sent), runtime.predict(planes)
    np.testing.assert_array_equal(uploaded.probabilities, direct.probabilities)
    assert list(uploaded.layer_sparsity) == ["relu1", "relu6", "max0"]
    for layer, sparsity in uploaded.layer_sparsity.items():
        np.testing.assert_array_equal(sparsity, direct.layer_sparsity[layer])


def test_registration_refuses_the_mnist_digit_step_for_inputs_other_than_grey_28x28(registered):
    _, path = registered
    with pytest.raises(RegistrationError, match=r"mnist-digit makes 28x28 grey digits; the input is \(1, 12, 12\)"):
        relu_card(path, Calibration(calibration(90)), open_onnx(path), preprocessing="mnist-digit")
