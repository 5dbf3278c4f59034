"""This checkout against another commit, served side by side in one run: ``make bench-compare`` (BASE=HEAD~1).

Both serve the same store (the project's two models) with one worker each. The cases alternate between the two
servers for several rounds, so the machine's noise falls on both alike; each case reports both medians and
their ratio (this checkout / the base). A refactor that changes no behaviour should keep every ratio near 1.

Usage: ``python -m benchmarks.compare --base HEAD~1 --seconds 5 --rounds 3``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from benchmarks.load import make_bodies, wrk
from benchmarks.server import PROJECT_MODELS, ROOT, Server

CASES = (
    ("one image, 1 conn", "/mnist/predict", "json1", 1, 1),
    ("one image, generic route, 1 conn", "/models/mnist_cnn/predict", "inputs1", 1, 1),
    ("one image, 8 conn", "/mnist/predict", "json1", 1, 8),
    ("JSON 256, 2 conn", "/models/mnist_cnn/predict", "inputs256", 256, 2),
    (".npy 1024, 2 conn", "/mnist/predict_batch", "npy1024", 1024, 2),
)


def worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(where), rev], cwd=ROOT, check=True, capture_output=True)
    return where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare with (default HEAD~1)")
    parser.add_argument("--seconds", type=int, default=5, help="wrk seconds per case and round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "compare.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    base_root = worktree(args.base, work / "base")
    bodies = make_bodies(work)
    servers = {
        "this": Server(work / "this.log", env=PROJECT_MODELS),
        "base": Server(work / "base.log", env=PROJECT_MODELS, root=base_root),
    }
    runs: dict[str, dict[str, list[dict]]] = {label: {"this": [], "base": []} for label, *_ in CASES}
    try:
        for server in servers.values():
            server.wait_ready()
        for _label, path, body, _, connections in CASES:  # warm-up, not reported
            for server in servers.values():
                wrk(server.url + path, bodies[body], 1, connections, work)
        for round_ in range(args.rounds):
            order = ("this", "base") if round_ % 2 == 0 else ("base", "this")
            for label, path, body, images, connections in CASES:
                for which in order:
                    r = wrk(servers[which].url + path, bodies[body], args.seconds, connections, work)
                    assert r["non_2xx"] == 0 and r["socket_errors"] == 0, (which, label, r)
                    runs[label][which].append({**r, "images_per_second": r["requests_per_second"] * images})
    finally:
        for server in servers.values():
            server.stop()
        subprocess.run(["git", "worktree", "remove", "--force", str(base_root)], cwd=ROOT, check=False)
    base_commit = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, capture_output=True, text=True).stdout
    this_commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    report = {"base": base_commit.strip(), "this": this_commit.strip(), "seconds": args.seconds, "cases": {}}
    print(f"{'case':<36} {'this':>12} {'base':>12} {'ratio':>7}   (images/s, median of {args.rounds} rounds)")
    for label, by in runs.items():
        this = statistics.median(r["images_per_second"] for r in by["this"])
        base = statistics.median(r["images_per_second"] for r in by["base"])
        report["cases"][label] = {"this": this, "base": base, "ratio": this / base, "runs": by}
        print(f"{label:<36} {this:>12,.0f} {base:>12,.0f} {this / base:>7.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
