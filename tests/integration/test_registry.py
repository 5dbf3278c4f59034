"""Every registered model served by one real ``bentoml serve``: the two example networks this project did
not design (a residual CNN with batch norm; an MLP with a nested block and a capped ReLU) next to the
project's own, through the generic routes; the aliases answer exactly as the generic routes do."""

from __future__ import annotations

import io

import httpx
import keras
import numpy as np
import pytest

from tests.helpers import png_bytes, without_versions

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ALL = ["colour_onnx", "digits_mlp", "digits_onnx", "iris_l1", "mnist_cnn", "residual_cnn", "small_onnx"]


def predict(server, name: str, inputs: np.ndarray, batch: int = 256) -> list[dict]:
    answers = []
    for start in range(0, len(inputs), batch):
        r = httpx.post(
            f"{server.url}/models/{name}/predict", json={"inputs": inputs[start : start + batch].tolist()}, timeout=120
        )
        assert r.status_code == 200, r.text
        answers += r.json()["predictions"]
    return answers


def load(name: str):
    import bentoml

    stored = bentoml.models.get(f"{name}:latest")
    return keras.models.load_model(stored.path_of("model.keras"), compile=False), stored.info.metadata


def layer_outputs(name: str, model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Each probed layer's output computed independently of the probe, layer by layer in Keras."""
    if name == "residual_cnn":  # every ReLU is a top-level layer, called once
        names = ["stem_relu", "block1_relu1", "block1_out", "block2_relu1", "block2_out"]
        multi = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
        return {n: np.asarray(o) for n, o in zip(names, multi([x], training=False), strict=True)}
    block = model.get_layer("block")  # digits_mlp: standardize -> block(hidden1, hidden2_linear, hidden2)
    h1 = block.get_layer("hidden1")(model.get_layer("standardize")(x))
    h2 = block.get_layer("hidden2")(block.get_layer("hidden2_linear")(h1))
    return {"block/hidden1": np.asarray(h1), "block/hidden2": np.asarray(h2)}


def test_every_registered_model_is_served_listed_and_described(server):
    listing = httpx.get(f"{server.url}/models").json()
    assert [m["name"] for m in listing["models"]] == ALL and listing["refused"] == []
    kinds = {m["name"]: m["kind"] for m in listing["models"]}
    assert kinds == {
        "colour_onnx": "onnx-relu",
        "digits_mlp": "keras-relu",
        "digits_onnx": "onnx-relu",
        "iris_l1": "linear",
        "mnist_cnn": "keras-relu",
        "residual_cnn": "keras-relu",
        "small_onnx": "onnx-relu",
    }
    for entry in listing["models"]:
        assert httpx.get(f"{server.url}/models/{entry['name']}").json() == entry
    mlp = next(m for m in listing["models"] if m["name"] == "digits_mlp")
    assert [layer["name"] for layer in mlp["relu_layers"]] == ["block/hidden1", "block/hidden2"]
    assert mlp["not_probed"] == [{"name": "gelu_head", "activation": "gelu"}] and mlp["output"] == "logits"
    assert mlp["class_names"][:2] == ["zero", "one"] and mlp["input_range"] == [0.0, 16.0]


@pytest.mark.parametrize("name", ["residual_cnn", "digits_mlp"])
def test_served_sparsity_equals_an_independent_count_and_false_alarms_stay_under_2_percent(server, examples, name):
    x = np.load(examples[name] / f"{name}_unseen.npy")
    labels = np.load(examples[name] / f"{name}_unseen_labels.npy")
    answers = predict(server, name, x)
    model, card = load(name)
    outputs = layer_outputs(name, model, x)
    assert [layer["name"] for layer in card["relu_layers"]] == list(outputs)
    sizes = {n: int(np.prod(o.shape[1:])) for n, o in outputs.items()}
    for i, answer in enumerate(answers):
        zeros = {n: int(np.count_nonzero(o[i] == 0)) for n, o in outputs.items()}
        for layer, value in answer["sparsity"]["layers"].items():
            assert value == zeros[layer] / sizes[layer], (i, layer)
        assert answer["sparsity"]["overall"] == pytest.approx(sum(zeros.values()) / sum(sizes.values()), abs=1e-12)
    false_alarms = np.mean([a["typicality"]["atypical"] for a in answers])
    accuracy = np.mean(np.array([a["label"] for a in answers]) == labels)
    print(f"{name}: {len(x)} unseen inputs, false alarms {false_alarms:.2%}, accuracy {accuracy:.4f}")
    assert false_alarms <= 0.02
    assert accuracy >= 0.8  # a trained model, not noise


@pytest.mark.parametrize("name", ["small_onnx", "colour_onnx", "digits_onnx"])
def test_onnx_sparsity_over_http_equals_onnx_runtime_with_the_activations_as_outputs(server, examples, name):
    """The served per-layer sparsity (counted inside the graph) against the slow, independent way: a plain ONNX
    Runtime session of the registered file with every probed tensor added as an output, counted in NumPy."""
    import bentoml
    import onnx

    from sparsity.onnx_graph import with_outputs
    from sparsity.onnx_probe import session

    if name == "digits_onnx":
        x = np.load(examples[name] / f"{name}_unseen.npy")
    else:
        from tests.onnx_models import calibration

        x = calibration(64, seed=7, channels=3 if name == "colour_onnx" else 1)
    answers = predict(server, name, x)
    stored = bentoml.models.get(f"{name}:latest")
    card = stored.info.metadata
    model = onnx.load(stored.path_of("model.onnx"))
    tensors = [layer["tensor"] for layer in card["relu_layers"]]
    plain = session(with_outputs(model, tensors))
    output = next(o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT)
    scores, *acts = plain.run([output, *tensors], {model.graph.input[0].name: x.astype(np.float32)})
    sizes = [layer["size"] for layer in card["relu_layers"]]
    assert sizes == [int(np.prod(a.shape[1:])) for a in acts]
    for i, answer in enumerate(answers):
        zeros = [int(np.count_nonzero(a[i] == 0)) for a in acts]
        served = answer["sparsity"]["layers"]
        assert list(served) == [layer["name"] for layer in card["relu_layers"]]
        assert list(served.values()) == [z / s for z, s in zip(zeros, sizes, strict=True)], i
        assert answer["sparsity"]["overall"] == pytest.approx(sum(zeros) / sum(sizes), abs=1e-12)
        assert answer["label"] == int(np.argmax(scores[i]))
    if name == "digits_onnx":  # a trained model: the scores are probabilities, the flag rarely raised
        np.testing.assert_allclose([a["probabilities"] for a in answers], scores, rtol=1e-4, atol=1e-6)
        labels = np.load(examples[name] / f"{name}_unseen_labels.npy")
        assert np.mean(np.array([a["label"] for a in answers]) == labels) >= 0.9
        assert np.mean([a["typicality"]["atypical"] for a in answers]) <= 0.03


def test_onnx_models_are_described_measured_and_take_channels_first_pictures(server, test_images):
    entry = httpx.get(f"{server.url}/models/small_onnx").json()
    assert entry["kind"] == "onnx-relu" and entry["producer"] == "tests" and entry["opset"] == 20
    assert entry["not_probed"] == [{"name": "gelu", "activation": "Gelu"}]
    assert [layer["op"] for layer in entry["relu_layers"]] == ["Relu", "Clip(0, 6)", "Max(x, 0)"]
    upload = {"image": ("digit.png", png_bytes(test_images[0][0]), "image/png")}
    r = httpx.post(f"{server.url}/models/small_onnx/predict_image", files=upload, timeout=60)
    assert r.status_code == 200, r.text  # resized to 12x12, grey, channels first
    assert list(r.json()["predictions"][0]["sparsity"]["layers"]) == ["relu1", "relu6", "max0"]
    bad = httpx.post(f"{server.url}/models/small_onnx/predict", json={"inputs": [np.zeros((12, 12, 1)).tolist()]})
    assert bad.status_code == 400 and bad.json()["error"].startswith("inputs[0]")
    metrics = without_versions(httpx.get(f"{server.url}/metrics").text)
    for series in (
        'activation_sparsity_ratio_count{layer="relu6",model="small_onnx"}',
        'activation_sparsity_baseline_ratio{layer="max0",model="small_onnx"}',
        'activation_unit_fired_total{layer="relu1",model="small_onnx",unit="3"}',
    ):
        assert series in metrics, series


def test_a_colour_picture_reaches_a_channels_first_model_as_rgb_planes(server):
    """``colour_onnx`` takes (3, 12, 12) inputs: an uploaded 12x12 picture, red on the left and blue on the
    right, is answered exactly as those two planes sent as numbers."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (12, 12), (255, 0, 0))
    ImageDraw.Draw(picture).rectangle((6, 0, 11, 11), fill=(0, 0, 255))
    png = io.BytesIO()
    picture.save(png, format="PNG")
    upload = {"image": ("halves.png", png.getvalue(), "image/png")}
    r = httpx.post(f"{server.url}/models/colour_onnx/predict_image?detail=units", files=upload, timeout=60)
    assert r.status_code == 200, r.text
    planes = np.zeros((3, 12, 12))
    planes[0, :, :6] = planes[2, :, 6:] = 1.0
    as_numbers = httpx.post(
        f"{server.url}/models/colour_onnx/predict?detail=units", json={"inputs": [planes.tolist()]}, timeout=60
    )
    swapped = httpx.post(  # blue on the left: another input, so the planes' order shows in the answer
        f"{server.url}/models/colour_onnx/predict?detail=units", json={"inputs": [planes[::-1].tolist()]}, timeout=60
    )
    uploaded, direct, other = (a.json()["predictions"][0] for a in (r, as_numbers, swapped))
    for key in ("label", "probabilities", "sparsity", "typicality", "units"):
        assert uploaded[key] == direct[key], key
    assert uploaded["probabilities"] != other["probabilities"]


def test_aliases_answer_exactly_as_the_generic_routes(server, test_images):
    images = test_images[0][:5]
    pairs = [
        (("/mnist/predict", {"images": images.tolist()}), ("/models/mnist_cnn/predict", {"inputs": images.tolist()})),
        (
            ("/iris/predict", {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}),
            ("/models/iris_l1/predict", {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}),
        ),
    ]
    for (alias, alias_body), (generic, generic_body) in pairs:
        a, g = httpx.post(server.url + alias, json=alias_body), httpx.post(server.url + generic, json=generic_body)
        assert a.status_code == g.status_code == 200 and a.content == g.content, (alias, a.text[:300], g.text[:300])
    buf = io.BytesIO()
    np.save(buf, (images * 255).astype(np.uint8))
    headers = {"content-type": "application/x-npy"}
    a = httpx.post(f"{server.url}/mnist/predict_batch", content=buf.getvalue(), headers=headers)
    g = httpx.post(f"{server.url}/models/mnist_cnn/predict_batch", content=buf.getvalue(), headers=headers)
    assert a.status_code == 200 and a.content == g.content
    upload = {"image": ("digit.png", png_bytes(images[0]), "image/png")}
    a = httpx.post(f"{server.url}/mnist/predict_image", files=upload, timeout=60)
    g = httpx.post(f"{server.url}/models/mnist_cnn/predict_image", files=upload, timeout=60)
    assert a.status_code == g.status_code == 200 and a.json() == g.json()


def test_a_validated_alias_body_answers_as_the_fast_path_does(server):
    """``{"images": ..., "extra": 1}`` is not plain: BentoML's endpoint validates it (pydantic ignores the
    extra key), and still answers with the same body."""
    image = [[0.0] * 28] * 28
    validated = httpx.post(f"{server.url}/mnist/predict", json={"images": [image], "extra": 1})
    fast = httpx.post(f"{server.url}/mnist/predict", json={"images": [image]})
    assert validated.status_code == fast.status_code == 200
    assert validated.json() == fast.json()
    assert list(validated.json()["predictions"][0]["sparsity"]) == ["overall", "layers"]  # no nulls for a CNN


def test_a_picture_model_of_its_own_takes_uploads_by_its_declared_step(server, test_images):
    upload = {"image": ("digit.png", png_bytes(test_images[0][0]), "image/png")}
    r = httpx.post(f"{server.url}/models/residual_cnn/predict_image", files=upload, timeout=60)
    assert r.status_code == 200, r.text
    assert next(iter(r.json()["predictions"][0]["sparsity"]["layers"])) == "stem_relu"
    r = httpx.post(f"{server.url}/models/digits_mlp/predict_image", files=upload, timeout=60)
    assert r.status_code == 404 and "takes inputs of shape (64,), not pictures" in r.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/models/nope/predict", {"inputs": [[0.0] * 64]}, 404, "model: no model named 'nope' is served"),
        ("/models/digits_mlp/predict", {"inputs": [[0.0] * 63]}, 400, "inputs[0]: must have 64 items, got 63"),
        ("/models/digits_mlp/predict", {"inputs": [[17.0] * 64]}, 400, "inputs[0][0]: must be within [0.0, 16.0]"),
        ("/models/digits_mlp/predict", {"inputs": [[0.0] * 64], "x": 1}, 400, "x: unknown field"),
        ("/models/digits_mlp/predict", {"inputs": []}, 400, "inputs: must be a list of 1 to 1024 items"),
        ("/models/residual_cnn/predict", {"inputs": [[[0.0] * 28] * 27]}, 400, "inputs[0]: must have 28 items"),
    ],
)
def test_unknown_models_and_bad_inputs_get_the_error_body(server, path, body, status, error):
    r = httpx.post(server.url + path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"].startswith(error) and set(r.json()) == {"error", "detail"}
    assert httpx.get(f"{server.url}/models/nope").status_code == 404


def test_every_model_has_its_own_metrics(server, examples):
    predict(server, "digits_mlp", np.load(examples["digits_mlp"] / "digits_mlp_unseen.npy")[:3])
    text = without_versions(httpx.get(f"{server.url}/metrics").text)
    for name in ("digits_mlp", "residual_cnn"):
        assert f'activation_sparsity_baseline_ratio{{layer="all",model="{name}"}}' in text
    assert 'activation_sparsity_ratio_count{layer="block/hidden2",model="digits_mlp"}' in text
    assert 'model_predictions_total{label="zero",model="digits_mlp"}' in text
