"""Drift windows on a real server (``make bench-drift``): one worker serving the default model with its drift
baseline, ``DRIFT_WINDOW`` 500 items.

1. Clean: windows of held-back digits (the default model's own held-back split, drawn with replacement; 20 digits
   a request), counted by ``model_drift_windows_total``: the share of windows that alarmed (target: at most 1%).
2. Drifted: one digit a request, 20% of them rotated by 90 degrees, the rest held-back digits; after every 50
   requests the alert's condition (``max by (model, version) (model_drift_psi) > 0.25``) is read from /metrics:
   the requests until it holds (target: within 2,000).

Writes ``reports/drift.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.reports import write_report
from benchmarks.server import ROOT, Server
from sparsity.drift import ALARM

WINDOW = 500


def drift_figures(url: str) -> tuple[dict[str, float], dict[str, float]]:
    """``(psi by signal, windows by outcome)`` of mnist_cnn's served version, from /metrics."""
    psi, windows = {}, {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.labels.get("model") != "mnist_cnn":
                continue
            if sample.name == "model_drift_psi":
                psi[sample.labels["signal"]] = sample.value
            elif sample.name == "model_drift_windows_total":
                windows[sample.labels["outcome"]] = sample.value
    return psi, windows


def post(client: httpx.Client, url: str, x: np.ndarray) -> None:
    answer = client.post(f"{url}/models/mnist_cnn/predict", json={"inputs": x.tolist()})
    answer.raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean-windows", type=int, default=200)
    parser.add_argument("--drift-requests", type=int, default=4000)
    parser.add_argument("--share", type=float, default=0.2, help="the share of rotated digits")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "drift.json")
    args = parser.parse_args(argv)
    import bentoml

    from modelstore.audit import latest_tag
    from training.data import load_mnist

    tag = latest_tag("mnist_cnn")
    card = bentoml.models.get(tag).info.metadata
    if not card.get("drift_baseline"):
        raise SystemExit(f"{tag} has no drift baseline in its card (registered before the prediction log): retrain")
    options = card["options"]
    split = load_mnist(options["dataset"], options["seed"])  # the split the model was trained on: its held-back part
    held = split.x_test.astype(np.float32)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    env = {"SERVED_MODELS": tag, "DRIFT_WINDOW": str(WINDOW), "PREDICTION_LOG": "false"}
    with Server(work / "serve.log", env=env) as server, httpx.Client(timeout=60) as client:
        url = server.url
        start = time.perf_counter()
        clean_psi = []
        for index in range(args.clean_windows):
            window = held[rng.integers(0, len(held), WINDOW)]
            for k in range(0, WINDOW, 20):
                post(client, url, window[k : k + 20])
            deadline = time.monotonic() + 10
            while True:  # the window is closed by the log's thread at its next flush (every half second)
                psi, windows = drift_figures(url)
                if sum(windows.values()) > index or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            clean_psi.append(max(psi.values()))
        _, windows = drift_figures(url)
        clean = {"windows": int(sum(windows.values())), "drifted": int(windows.get("drifted", 0)),
                 "psi_median": float(np.median(clean_psi)), "psi_p99": float(np.quantile(clean_psi, 0.99)),
                 "psi_max": float(max(clean_psi)), "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        clean["alarm_share"] = clean["drifted"] / max(clean["windows"], 1)
        print(f"clean held-back digits: {clean['drifted']} of {clean['windows']} windows alarmed "
              f"({100 * clean['alarm_share']:.1f}%); largest PSI a window: median {clean['psi_median']:.3f}, "
              f"p99 {clean['psi_p99']:.3f}, max {clean['psi_max']:.3f} (alarm over {ALARM})")  # fmt: skip
        held_until, first_psi = None, None
        for request in range(1, args.drift_requests + 1):
            digit = held[rng.integers(0, len(held))]
            if rng.random() < args.share:
                digit = np.rot90(digit)
            post(client, url, digit[None])
            if request % 50 == 0:
                psi, _ = drift_figures(url)
                if max(psi.values()) > ALARM:
                    held_until, first_psi = request, psi
                    break
        drifted = {"share_rotated": args.share, "requests_until_alarm": held_until, "psi": first_psi}
        print(f"{100 * args.share:.0f}% rotated digits: the alert's condition held after "
              f"{held_until if held_until else 'more than ' + str(args.drift_requests)} requests; PSI then "
              f"{json.dumps({k: round(v, 3) for k, v in (first_psi or {}).items()})}")  # fmt: skip
    write_report(args.out, model=tag, window=WINDOW, alarm=ALARM, clean=clean, drifted=drifted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
