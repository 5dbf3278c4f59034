"""Shadows and canaries in one worker's data plane, without HTTP: two versions of the toy kind (a NumPy MLP), the
comparison the shadow thread writes read back from the metrics equal to the offline ``compare`` of the same
inputs, the primary pinned, the queue bounded, a removed shadow stopped at once, and a canary sticky by key."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from modelstore.compare import IncomparableVersions, Totals, check_pair, compare, compare_on, summary, unit_widths
from modelstore.register import Calibration, relu_card
from service import exposition
from service.config import Settings, SettingsError
from service.dataplane import DataPlane
from service.shadow import ShadowError, ShadowSpec, answers_candidate, check_share, sticky_draw, totals_of
from service.shadowroutes import parse_request
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


def _plane(runtimes, queue_items: int = 1024) -> DataPlane:
    plane = DataPlane(max_image_pixels=10**6, shadow_queue_items=queue_items)
    plane.use(runtimes)
    return plane


def _spec(share: float = 1.0, mode: str = "mirror", **changes) -> ShadowSpec:
    spec = ShadowSpec("toy_shadow", "v1", "v2", share, mode, id=f"t{time.monotonic_ns()}", since=time.time())
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
    plane = _plane([old, new], queue_items=5)
    spec = _spec()
    plane.switch(plane.serving_tags(), {"toy_shadow": spec})
    with plane.shadows._cv:  # the shadow thread waits while the requests come in
        for _ in range(4):
            plane.infer(old, X[:2])
        queued = len(plane.shadows._queue)
    assert queued == 2  # 2 + 2 inputs fit in 5, the next 2 do not
    _, counts = _settled(plane, spec, 8)
    assert (counts["mirrored"], counts["dropped"], counts["compared"]) == (4, 4, 4)
    plane.switch(plane.serving_tags(), {})  # removed
    assert plane.shadows.mirrors == {} and not plane.shadows._queue
    plane.infer(old, X[:3])
    assert len(plane.shadows._queue) == 0
    assert plane.model("toy_shadow") is new  # without the pin, the newest answers again


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
