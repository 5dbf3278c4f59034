"""Batching in the data plane (service.batching): requests queued together share a pass and each gets exactly
its unbatched answer, oldest first, across versions and sizes; a lone request does not wait; the queue is
bounded (503 with Retry-After); a failing pass is retried request by request."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from modelstore.register import Calibration, relu_card
from service.batching import Batcher, Overloaded
from service.codecs.responses import predict_json
from service.dataplane import DataPlane
from sparsity.detectors import STATE_FILE
from sparsity.result import concatenate, rows
from tests import toy_kind


def _runtime(directory, tag: str, seed: int, row_by_row: bool = True):
    """A toy ReLU MLP; ``row_by_row``: its pass computes each row alone (so it answers a batch's items as it
    answers them alone, as the sparse engine does), else with NumPy's matrix products over the batch (whose last
    bits depend on the batch, as TensorFlow's do)."""
    rng = np.random.default_rng(seed)
    path = directory / f"{seed}.npz"
    np.savez(
        path, w1=rng.normal(size=(4, 12)), b1=rng.normal(size=12) - 0.3, w2=rng.normal(size=(12, 3)), b2=np.zeros(3)
    )
    card, files = relu_card(path, Calibration(rng.random((90, 4))), toy_kind.open_mlp(path), input_range=(0.0, 1.0))
    (directory / STATE_FILE).write_bytes(files[STATE_FILE])
    runtime = toy_kind.NumpyMlpRuntime(tag, card, str(path))
    if row_by_row:
        run = runtime.probe.run
        runtime.probe.run = lambda x: concatenate([run(x[i : i + 1]) for i in range(len(x))])
    return runtime


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    directory = tmp_path_factory.mktemp("batching")
    return [_runtime(directory, "toy_batch:v1", 1), _runtime(directory, "toy_batch:v2", 2)]


def _plane(runtimes, max_size=64, wait_ms=0.0, max_queue=1024) -> DataPlane:
    plane = DataPlane(max_image_pixels=10**6, batching=(max_size, wait_ms, max_queue))
    plane.use(runtimes)
    return plane


def _inputs(sizes, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, 4)).astype(np.float32) for n in sizes]


def _passes(plane: DataPlane) -> list[int]:
    """Record the item count of every pass the batcher runs."""
    seen, run = [], plane.batcher.run

    def counting(runtime, x, waits):
        seen.append(len(x))
        return run(runtime, x, waits)

    plane.batcher.run = counting
    return seen


def test_requests_queued_together_share_a_pass_and_each_gets_its_unbatched_answer(runtimes):
    plane = _plane(runtimes)
    passes = _passes(plane)
    sizes = [1, 3, 1, 2, 5, 1, 1, 4]
    xs = _inputs(sizes)
    which = [runtimes[i % 2] for i in range(len(xs))]  # two versions in flight at once: two queues

    async def main():
        return await asyncio.gather(*(plane.infer_batched(rt, x) for rt, x in zip(which, xs, strict=True)))

    batched = asyncio.run(main())
    assert sorted(passes) == sorted([sum(sizes[0::2]), sum(sizes[1::2])])  # one pass a version
    for rt, x, prediction in zip(which, xs, batched, strict=True):
        alone = rt.predict(x)
        assert predict_json(rt, prediction, "units") == predict_json(rt, alone, "units")  # every byte, every item
        np.testing.assert_array_equal(prediction.probabilities, alone.probabilities)
        np.testing.assert_array_equal(prediction.scores, alone.scores)


def test_the_oldest_go_first_and_a_pass_takes_at_most_max_size_items(runtimes):
    plane = _plane(runtimes, max_size=4)
    passes = _passes(plane)
    xs = _inputs([2, 2, 3, 1, 6, 1])

    async def main():
        return await asyncio.gather(*(plane.infer_batched(runtimes[0], x) for x in xs))

    answers = asyncio.run(main())
    assert passes == [4, 4, 6, 1]  # 2+2, 3+1, then the request of 6 alone (never split), then 1: arrival order
    for x, prediction in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(prediction.probabilities, runtimes[0].predict(x).probabilities)


def test_a_lone_request_does_not_wait_unless_a_wait_is_set(runtimes):
    x = _inputs([1])[0]
    for wait_ms, lower, upper in ((0.0, 0.0, 0.05), (200.0, 0.19, 5.0)):
        plane = _plane(runtimes, wait_ms=wait_ms)
        start = time.perf_counter()
        asyncio.run(plane.infer_batched(runtimes[0], x))
        assert lower <= time.perf_counter() - start < upper, wait_ms


def test_a_full_batch_does_not_wait_for_the_rest_of_the_wait(runtimes):
    plane = _plane(runtimes, max_size=4, wait_ms=5000.0)
    start = time.perf_counter()

    async def main():
        return await asyncio.gather(*(plane.infer_batched(runtimes[0], x) for x in _inputs([1, 1, 1, 1])))

    asyncio.run(main())
    assert time.perf_counter() - start < 2.0


def test_past_the_queue_bound_a_request_is_refused_with_503_and_retry_after(runtimes):
    plane = _plane(runtimes, max_queue=1024, wait_ms=100.0)
    refused = []

    async def main():
        waiting = [asyncio.ensure_future(plane.infer_batched(runtimes[0], x)) for x in _inputs([512, 512])]
        await asyncio.sleep(0)
        try:
            await plane.infer_batched(runtimes[0], _inputs([1])[0])
        except Overloaded as exc:
            refused.append(exc)
        return await asyncio.gather(*waiting)

    answers = asyncio.run(main())
    assert len(answers) == 2 and all(len(a.probabilities) == 512 for a in answers)  # the queued ones answered
    (exc,) = refused
    assert (exc.status, exc.field, exc.kind) == (503, "queue", "overloaded")
    assert exc.headers == ((b"retry-after", b"1"),) and "1024" in exc.message
    plane.recorder.models[runtimes[0].tag].flush()
    from service.observability.metrics import QUEUE_REFUSALS

    assert QUEUE_REFUSALS.labels("toy_batch", "v1")._value.get() >= 1


def test_when_a_pass_fails_its_requests_run_one_by_one_and_only_the_failing_one_gets_the_error(runtimes):
    plane = _plane(runtimes)
    good, bad = _inputs([2])[0], np.full((1, 4), 7.0, dtype=np.float32)  # out of range: the probe refuses it

    async def main():
        return await asyncio.gather(
            plane.infer_batched(runtimes[0], good), plane.infer_batched(runtimes[0], bad), return_exceptions=True
        )

    answer, error = asyncio.run(main())
    np.testing.assert_array_equal(answer.probabilities, runtimes[0].predict(good).probabilities)
    assert error.status == 400 and "must be within" in error.message


def test_rows_cut_every_per_item_field_and_keep_the_rest(runtimes):
    x = _inputs([5])[0]
    whole = runtimes[0].predict(x)
    part = rows(whole, 1, 3)
    np.testing.assert_array_equal(part.probabilities, whole.probabilities[1:3])
    assert {k: v.shape[0] for k, v in part.fired.items()} == {k: 2 for k in whole.fired}
    assert (
        json.loads(predict_json(runtimes[0], part))["predictions"]
        == json.loads(predict_json(runtimes[0], whole))["predictions"][1:3]
    )


def test_a_version_whose_answers_depend_on_the_batch_is_never_batched(tmp_path, runtimes):
    blas = _runtime(tmp_path, "toy_blas:v1", 3, row_by_row=False)
    plane = _plane([blas])
    assert blas.batchable is False and all(r.batchable for r in runtimes)
    passes = _passes(plane)
    xs = _inputs([1, 3, 2, 1])

    async def main():
        return await asyncio.gather(*(plane.infer_batched(blas, x) for x in xs))

    for x, prediction in zip(xs, asyncio.run(main()), strict=True):
        assert predict_json(blas, prediction, "units") == predict_json(blas, blas.predict(x), "units")
    assert passes == [1, 3, 2, 1]  # one pass a request


def test_batching_off_calls_the_pass_directly(runtimes):
    plane = _plane(runtimes, max_size=1)
    assert not plane.batcher.on
    x = _inputs([3])[0]
    np.testing.assert_array_equal(
        asyncio.run(plane.infer_batched(runtimes[0], x)).probabilities, runtimes[0].predict(x).probabilities
    )
    assert isinstance(Batcher(lambda *a: None, max_size=1), Batcher)


def test_one_client_at_a_time_runs_at_once_and_company_turns_batching_back_on(runtimes):
    plane = _plane(runtimes)
    passes = _passes(plane)
    xs = _inputs([1] * 43)

    async def main():
        alone = [await plane.infer_batched(runtimes[0], x) for x in xs[:3]]  # one at a time
        queue = plane.batcher.queues[runtimes[0].tag]
        assert queue.alone >= 2
        task = asyncio.ensure_future(plane.infer_batched(runtimes[0], xs[3]))
        await asyncio.sleep(0)
        assert task.done()  # ran at once: no turn of the loop waited for company
        together = await asyncio.gather(*(plane.infer_batched(runtimes[0], x) for x in xs[4:]))
        return [*alone, task.result(), *together]

    answers = asyncio.run(main())
    assert max(passes[4:]) > 1  # with company (40 at once), passes are shared again
    for x, prediction in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(prediction.probabilities, runtimes[0].predict(x).probabilities)
