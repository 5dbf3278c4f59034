"""Shadows and canaries in one worker's data plane, without HTTP: two versions of the toy kind (a NumPy MLP), the
comparison the shadow thread writes read back from the metrics equal to the offline ``compare`` of the same
inputs, the primary pinned, the queue bounded, a removed shadow stopped at once, and a canary sticky by key."""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import replace

import numpy as np
import pytest

from modelstore.compare import IncomparableVersions, Totals, check_pair, compare, compare_on, summary, unit_widths
from modelstore.register import Calibration, relu_card
from modelstore.runtime import Prediction
from service.config import Settings, SettingsError
from service.dataplane import DataPlane
from service.errors import ShadowError
from service.observability import exposition
from service.rest.shadowroutes import parse_request
from service.shadow.series import totals_of
from service.shadow.spec import ShadowSpec, answers_candidate, check_share, sticky_draw
from service.shadow.wire import ShadowQueue, decode_item, encode_item, item_id, read_messages, socket_pair
from sparsity.detectors import STATE_FILE
from tests import toy_kind

RNG = np.random.default_rng(5)
X = RNG.random((40, 4))


def _runtime(directory, tag: str, seed: int, created: float, hidden: int = 12, classes: int = 3):
    rng = np.random.default_rng(seed)
    path = directory / f"{seed}.npz"
    weights = {"w1": rng.normal(size=(4, hidden)), "b1": rng.normal(size=hidden) - 0.3}
    np.savez(path, **weights, w2=rng.normal(size=(hidden, classes)), b2=np.zeros(classes))
    card, files = relu_card(path, Calibration(rng.random((90, 4))), toy_kind.open_mlp(path), input_range=(0.0, 1.0))
    (directory / STATE_FILE).write_bytes(files[STATE_FILE])
    runtime = toy_kind.NumpyMlpRuntime(tag, card, str(path))
    runtime.created = created
    return runtime


@pytest.fixture
def pair(tmp_path):
    """Two versions of one name, the second stored later."""
    runtimes = []
    for version in (1, 2):
        (tmp_path / str(version)).mkdir()
        runtimes.append(_runtime(tmp_path / str(version), f"toy_shadow:v{version}", version, created=float(version)))
    return tuple(runtimes)


def _plane(runtimes) -> DataPlane:
    """A data plane whose shadows run in a thread on its own runtimes (the service: in a process of their own)."""
    plane = DataPlane(max_image_pixels=10**6)
    plane.shadows.in_process = True
    plane.use(runtimes)
    return plane


def _spec(share: float = 1.0, mode: str = "mirror", **changes) -> ShadowSpec:
    spec = ShadowSpec("toy_shadow", "v1", "v2", share, mode, id=secrets.token_hex(4), since=time.time())
    return replace(spec, **changes)


def _settled(plane: DataPlane, spec: ShadowSpec, expected: int, timeout: float = 10.0) -> tuple[Totals, dict]:
    """The shadow's totals once ``expected`` inputs are compared or dropped (the thread flushes when idle)."""
    deadline = time.monotonic() + timeout
    while True:
        totals, counts = totals_of(exposition.collect(), spec, unit_widths(plane.loaded[spec.candidate_tag]))
        if counts["compared"] + counts["dropped"] >= expected or time.monotonic() > deadline:
            return totals, counts
        time.sleep(0.02)


def test_the_shadows_figures_equal_the_offline_comparison_of_the_same_inputs(pair):
    old, new = pair
    plane = _plane([old, new])
    spec = _spec()
    plane.switch(plane.serving_tags(), {"toy_shadow": spec})
    assert plane.model("toy_shadow") is old  # pinned: the newer version does not take the name
    for start in range(0, len(X), 7):  # requests of several sizes
        assert plane.infer(plane.model("toy_shadow"), X[start : start + 7]).labels.shape == (len(X[start : start + 7]),)
    totals, counts = _settled(plane, spec, len(X))
    assert counts["mirrored"] == counts["compared"] == len(X) and counts["dropped"] == 0
    served = summary(totals, unit_widths(new))
    offline = compare_on(old, new, X)
    assert served["inputs"] == offline["inputs"] == len(X)
    assert served["label_agreement"] == offline["label_agreement"]
    assert served["atypical"] == offline["atypical"]
    assert served["candidate_dead_units"] == offline["candidate_dead_units"]
    assert served["mean_total_variation"] == pytest.approx(offline["mean_total_variation"], abs=1e-9)
    assert served["layers"].keys() == offline["layers"].keys()
    for layer, row in offline["layers"].items():
        for key, value in row.items():
            assert served["layers"][layer][key] == pytest.approx(value, abs=1e-9)
    # and the offline figures are what the two models say, computed here again
    p, q = old.predict(X), new.predict(X)
    assert offline["label_agreement"]["count"] == int(np.sum(p.labels == q.labels))
    assert offline["mean_total_variation"] == pytest.approx(
        np.mean(0.5 * np.abs(p.probabilities - q.probabilities).sum(1))
    )
    assert offline["layers"]["all"]["difference"] == pytest.approx(np.mean(q.overall) - np.mean(p.overall))
    dead = {layer: int(np.sum(~rows.any(axis=0))) for layer, rows in q.fired.items()}
    assert offline["candidate_dead_units"] == dead


def test_a_full_queue_drops_shadow_work_and_counts_it_and_removing_the_shadow_stops_it(pair):
    old, new = pair
    plane = _plane([old, new])
    ours, theirs = socket_pair(8192)  # a queue nobody reads: it fills
    queue = plane.shadows.queue = ShadowQueue(ours)
    spec = _spec()
    plane.switch(plane.serving_tags(), {"toy_shadow": spec})
    for _ in range(200):
        assert plane.infer(old, X[:2]).labels.shape == (2,)  # the primary answers every request
    _, counts = totals_of(exposition.collect(), spec, {})
    assert counts["mirrored"] + counts["dropped"] == 400 and counts["dropped"] > 0 and counts["mirrored"] > 0
    theirs.setblocking(False)
    received = []
    with contextlib.suppress(BlockingIOError):
        while True:
            received.append(theirs.recv(1 << 16))
    config, items = received[0], received[1:]
    assert config[:1] == b"C" and len(items) * 2 == counts["mirrored"]  # every queued request arrived whole
    assert all(item_id(item) == spec.id and len(item) == len(items[0]) for item in items)
    assert sum(map(len, received)) <= 2 * queue.capacity  # bounded (the kernel counts its own overhead too)
    plane.switch(plane.serving_tags(), {})  # removed: nothing more is offered
    assert plane.shadows.mirrors == {}
    plane.infer(old, X[:3])
    assert theirs.recv(1 << 16)[:1] == b"C"  # the new configuration, and no request after it
    with pytest.raises(BlockingIOError):
        theirs.recv(1 << 16)
    assert plane.model("toy_shadow") is new  # without the pin, the newest answers again
    theirs.close()


def test_messages_cross_whole_in_order_and_a_full_queue_refuses_without_waiting():
    ours, theirs = socket_pair(8192)
    queue = ShadowQueue(ours)
    sent = [bytes([i % 250]) * (100 + i) for i in range(400)]
    accepted = [m for m in sent if queue.offer(m)]
    assert 0 < len(accepted) < len(sent)
    started = time.monotonic()
    assert not queue.offer(b"x" * 5000) and time.monotonic() - started < 0.1
    assert not queue.offer(b"x" * (queue.capacity * 4))  # larger than the queue: refused, not cut
    queue.close()
    batches = list(
        read_messages(theirs, lambda: None, max_bytes=queue.capacity, idle_seconds=0.01, max_batch=7, gather_seconds=0)
    )
    assert [message for batch in batches for message in batch] == accepted
    assert max(map(len, batches)) == 7 and len(batches) == -(-len(accepted) // 7)  # what waited, 7 at a time
    theirs.close()


def test_a_share_mirrors_about_that_share_and_a_version_that_is_not_the_primary_is_not_mirrored(pair):
    old, new = pair
    plane = _plane([old, new])
    spec = _spec(share=0.3)
    plane.switch(plane.serving_tags(), {"toy_shadow": spec})
    for i in range(400):
        plane.infer(old, X[i % 40 : i % 40 + 1])
    plane.infer(new, X[:5])  # the candidate asked directly: not mirrored
    _, counts = _settled(plane, spec, 1)
    time.sleep(0.3)
    _, counts = totals_of(exposition.collect(), spec, unit_widths(new))
    assert 80 <= counts["mirrored"] + counts["dropped"] <= 160  # 120 expected; 0.3 +- 5 standard deviations


def test_a_canary_answers_its_share_sticky_by_key(pair):
    old, new = pair
    plane = _plane([old, new])
    spec = _spec(share=0.5, mode="canary")
    plane.switch(plane.serving_tags(), {"toy_shadow": spec})
    sides = {}
    for user in range(200):
        key = f"user-{user}".encode()
        chosen = {plane.choose("toy_shadow", key)[0].tag for _ in range(3)}
        assert len(chosen) == 1  # sticky
        sides[key] = chosen.pop()
    on_candidate = sum(tag == "toy_shadow:v2" for tag in sides.values())
    assert 70 <= on_candidate <= 130
    runtime, headers = plane.choose("toy_shadow", b"user-1")
    assert dict(headers) == {
        b"x-model-version": runtime.version.encode(),
        b"x-model-role": b"candidate" if runtime is new else b"primary",
    }
    # raising the share keeps the keys already on the candidate there
    wider = replace(spec, share=0.8)
    plane.switch(plane.serving_tags(), {"toy_shadow": wider})
    for key, tag in sides.items():
        if tag == "toy_shadow:v2":
            assert plane.choose("toy_shadow", key)[0] is new
    for share, expected in ((0.0, old), (1.0, new)):
        assert all(
            answers_candidate(replace(spec, share=share), f"k{i}".encode()) == (expected is new) for i in range(50)
        )
    assert 0 <= sticky_draw(b"k", "toy_shadow", "v2") < 1
    plane.switch(plane.serving_tags(), {})
    assert plane.choose("toy_shadow", b"user-1") == (new, ())


def test_versions_with_other_inputs_or_classes_cannot_be_compared(tmp_path, pair):
    old, _ = pair
    (tmp_path / "3").mkdir()
    other = _runtime(tmp_path / "3", "toy_shadow:v3", 3, created=3.0, classes=4)
    with pytest.raises(IncomparableVersions, match="other classes"):
        check_pair(old, other)
    compared = compare(old.predict(X[:3]), old.predict(X[:3]))
    assert compared.agree.all() and not compared.total_variation.any()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"[1]", "body"),
        (b'{"version": "v2"}', "share"),
        (b'{"version": "v2", "share": 1.5}', "share"),
        (b'{"version": "v2", "share": -0.1}', "share"),
        (b'{"version": "v2", "share": true}', "share"),
        (b'{"version": "v2", "share": "0.5"}', "share"),
        (b'{"version": "", "share": 0.5}', "version"),
        (b'{"version": "toy:v2", "share": 0.5}', "version"),
        (b'{"version": "v2", "share": 0.5, "mode": "split"}', "mode"),
        (b'{"version": "v2", "share": 0.5, "extra": 1}', "body"),
        (b'{"version": "v2", "share": NaN}', "share"),
    ],
)
def test_a_bad_shadow_request_names_its_field(body, field):
    with pytest.raises(ShadowError) as refused:
        parse_request(body)
    assert refused.value.field == field and refused.value.status == 400
    assert "\n" not in str(refused.value)


def test_good_shadow_requests_and_settings_parse():
    assert parse_request(b'{"version": "v2", "share": 0.25}') == ("v2", 0.25, "mirror")
    assert parse_request(b'{"version": "v2", "share": 1, "mode": "canary"}') == ("v2", 1.0, "canary")
    assert check_share(0) == 0.0
    settings = Settings.from_env({"SHADOW": "mnist_cnn:abc:0.25,iris_l1:def:1:canary"})
    assert settings.shadows == (("mnist_cnn", "abc", 0.25, "mirror"), ("iris_l1", "def", 1.0, "canary"))
    for raw in ("mnist_cnn:abc", "mnist_cnn:abc:2", "mnist_cnn:abc:nan", "a:b:0.5,a:c:0.5", "a:b:0.5:split", "A:b:1"):
        with pytest.raises(SettingsError, match="SHADOW"):
            Settings.from_env({"SHADOW": raw})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layers", [["conv1", "dense"], []])
def test_a_mirrored_request_crosses_the_pipe_as_it_was(dtype, layers):
    rng = np.random.default_rng(3)
    x = rng.random((5, 3, 2)).astype(dtype)
    sparsity = {layer: rng.random(5) for layer in reversed(layers)}  # the frame follows ``layers``' order
    sent = Prediction(rng.random((5, 4)), sparsity, rng.random(5), np.zeros(5), rng.random(5) > 0.5)
    payload = encode_item("ab12cd34", x, sent, layers)
    assert item_id(payload) == "ab12cd34"
    got_x, got = decode_item(payload, (3, 2), layers)
    assert got_x.dtype == dtype and np.array_equal(got_x, x)
    assert np.array_equal(got.probabilities, sent.probabilities) and np.array_equal(got.atypical, sent.atypical)
    assert list(got.layer_sparsity) == layers
    for layer in layers:
        assert np.array_equal(got.layer_sparsity[layer], sent.layer_sparsity[layer])
    if layers:
        assert np.array_equal(got.overall, sent.overall)
