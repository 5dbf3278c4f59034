"""In-process limits of the served model: the plain forward pass against the probe, and the probe's
throughput (what HTTP is compared with). Run by ``benchmarks.http_bench`` in separate processes,
one TensorFlow thread each, as a service worker runs.

``python -m benchmarks.inprocess compare``   plain vs probe at 1 and 256 images (medians, JSON)
``python -m benchmarks.inprocess throughput --start-at T --seconds S``   probe images/s at 256
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sparsity.logs import quiet_tensorflow

quiet_tensorflow()


def load(tag: str):
    """The runtime with its probe exactly as a service worker builds it (one TF thread), and the plain forward
    pass, a concrete function taking a tensor, as the probe calls its own. Through ``tf.function`` (its
    argument matching) the plain pass took 1.07 ms against 0.82 at one image, measured in one process, which
    made the probe look free there."""
    import tensorflow as tf

    from modelstore.kinds import LoadOptions, from_store
    from sparsity.logs import set_tensorflow_threads

    set_tensorflow_threads(1, 1)
    runtime = from_store(tag, LoadOptions(engine="tensorflow"))
    model = runtime.probe.model
    spec = tf.TensorSpec((None, *runtime.item_shape), tf.float32)
    plain = tf.function(lambda x: model(x, training=False), input_signature=[spec]).get_concrete_function()
    return runtime, plain


def compare(tag: str, repeats: int) -> dict:
    """Median ms per call of ``model(x)`` (predictions only) and of ``probe.run`` (predictions, per-layer
    zeros, per-unit firing), both from NumPy input to NumPy output, taking turns within each repeat."""
    import tensorflow as tf

    from training.timing import median_ms_in_turns

    runtime, plain = load(tag)
    name, probe = runtime.tag, runtime.probe
    rng = np.random.default_rng(0)
    inputs = {n: rng.random((n, 28, 28), dtype=np.float32) for n in (1, 256)}
    calls = {
        "plain": lambda x: plain(tf.convert_to_tensor(x)).numpy(),
        "probe": probe.run,
    }
    medians = median_ms_in_turns(calls, inputs, inner={1: 40, 256: 3}, repeats=repeats)
    out: dict = {"model": name}
    for key in calls:
        for n in inputs:
            out[f"{key}_ms_{n}"] = medians[key][n]
    for n in inputs:
        out[f"probe_overhead_{n}"] = out[f"probe_ms_{n}"] / out[f"plain_ms_{n}"] - 1
    return out


def throughput(tag: str, start_at: float, seconds: float, batch: int) -> dict:
    """Images/s of ``probe.run`` on ``batch`` images, in a window that starts at ``start_at`` (so that
    several processes measure the same seconds)."""
    probe = load(tag)[0].probe
    x = np.random.default_rng(0).random((batch, 28, 28), dtype=np.float32)
    probe.run(x)
    time.sleep(max(0.0, start_at - time.time()))
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        probe.run(x)
        calls += 1
    elapsed = time.perf_counter() - start
    return {"images_per_second": calls * batch / elapsed, "calls": calls, "seconds": elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["compare", "throughput"])
    parser.add_argument("--tag", default="mnist_cnn:latest")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    if args.mode == "compare":
        result = compare(args.tag, args.repeats)
    else:
        result = throughput(args.tag, args.start_at, args.seconds, args.batch)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
