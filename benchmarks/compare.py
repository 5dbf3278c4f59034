"""This checkout against another commit, served side by side in one run: ``make bench-compare`` (BASE=HEAD~1).

Both serve the same store (the project's two models) with one worker each. The cases alternate between the two
servers for several rounds, so the machine's noise falls on both alike; each case reports both medians and
their ratio (this checkout / the base). A refactor that changes no behaviour should keep every ratio near 1.

Usage: ``python -m benchmarks.compare --base HEAD~1 --seconds 5 --rounds 3``.
"""

from __future__ import annotations

import argparse
import json
import os
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
    ("JSON 64, 2 conn", "/models/mnist_cnn/predict", "inputs64", 64, 2),
    ("JSON 256, 2 conn", "/models/mnist_cnn/predict", "inputs256", 256, 2),
    (".npy 1024, 2 conn", "/mnist/predict_batch", "npy1024", 1024, 2),
)


def probes(bodies) -> list[tuple[str, str, bytes, str]]:
    """Requests both servers must answer alike, byte for byte: every route, valid and refused."""
    one = bodies["json1"][0].read_bytes()
    generic = bodies["inputs1"][0].read_bytes()
    npy = bodies["npy256"][0].read_bytes()
    import io

    from PIL import Image, ImageDraw

    picture = Image.new("L", (40, 40), 255)
    ImageDraw.Draw(picture).line((20, 5, 20, 35), fill=0, width=4)  # a dark "1" on white
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    png = buffer.getvalue()
    boundary = "x1x"
    upload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    multipart = f"multipart/form-data; boundary={boundary}"
    oip_iris = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    ).encode()
    return [
        ("GET", "/models", b"", ""),
        ("GET", "/models/mnist_cnn", b"", ""),
        ("GET", "/models/iris_l1/examples", b"", ""),
        ("GET", "/models/nothing", b"", ""),
        ("POST", "/mnist/predict", one, "application/json"),
        ("POST", "/models/mnist_cnn/predict", generic, "application/json"),
        ("POST", "/models/mnist_cnn/predict?detail=units", generic, "application/json"),
        ("POST", "/models/mnist_cnn/predict?detail=all", generic, "application/json"),
        ("POST", "/mnist/predict_batch", npy, "application/x-npy"),
        ("POST", "/models/mnist_cnn/predict_batch", npy[:-5], "application/x-npy"),
        ("POST", "/mnist/predict_image", upload, multipart),
        ("POST", "/models/mnist_cnn/predict_image", upload, multipart),
        ("POST", "/models/iris_l1/predict_image", upload, multipart),
        ("POST", "/iris/predict", b'{"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}', "application/json"),
        ("POST", "/iris/predict", b'{"features": [[5.1, 3.5, 1.4]]}', "application/json"),
        ("POST", "/models/iris_l1/predict", b'{"inputs": [[5.1, "a", 1.4, 0.2]]}', "application/json"),
        ("POST", "/models/iris_l1/predict", b'{"inputs": [[1e7, 3.5, 1.4, 0.2]]}', "application/json"),
        ("POST", "/mnist/predict", b'{"images": [[[2.0]]]}', "application/json"),
        ("POST", "/models/nothing/predict", generic, "application/json"),
        ("POST", "/iris/predict", b"{}", "text/plain"),
        # the Open Inference Protocol, shadows and the keys' refusals
        ("GET", "/v2", b"", ""),
        ("GET", "/v2/health/ready", b"", ""),
        ("GET", "/v2/models/mnist_cnn", b"", ""),
        ("GET", "/v2/models/iris_l1/ready", b"", ""),
        ("GET", "/v2/models/nothing", b"", ""),
        ("POST", "/v2/models/iris_l1/infer", oip_iris, "application/json"),
        ("POST", "/v2/models/iris_l1/infer", b'{"inputs": []}', "application/json"),
        ("POST", "/v2/models/nothing/infer", oip_iris, "application/json"),
        ("GET", "/models/mnist_cnn/shadow", b"", ""),
        ("PUT", "/models/mnist_cnn/shadow", b'{"version": "x", "share": 0.5}', "application/json"),
        ("POST", "/v2/repository/index", b"{}", "application/json"),
        ("GET", "/livez", b"", ""),
    ]


UNROUTED = [("GET", "/nothing", b"", ""), ("POST", "/models/x/train", b"{}", "application/json")]
"""Paths no route has: refused in one place since issue 38 (a JSON ``Error`` 404, BentoML's plain text before)."""


def same_answers(servers: dict[str, Server], requests: list[tuple[str, str, bytes, str]]) -> list[str]:
    """The requests whose status or body differ between the two servers (empty: byte for byte the same)."""
    import httpx

    differ = []
    for method, path, body, content_type in requests:
        headers = {"content-type": content_type} if content_type else {}
        answers = [
            httpx.request(method, server.url + path, content=body or None, headers=headers, timeout=60)
            for server in servers.values()
        ]
        if len({(a.status_code, a.content) for a in answers}) != 1:
            differ.append(f"{method} {path}: " + " vs ".join(f"{a.status_code} {a.content[:200]!r}" for a in answers))
    return differ


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
    # both with oneDNN's kernels as this checkout runs them (off unless asked for: see sparsity.logs), so that a
    # difference is the code's, not TensorFlow's kernel choice
    env = {**PROJECT_MODELS, "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS") or "0"}
    servers = {
        "this": Server(work / "this.log", env=env),
        "base": Server(work / "base.log", env=env, root=base_root),
    }
    runs: dict[str, dict[str, list[dict]]] = {label: {"this": [], "base": []} for label, *_ in CASES}
    try:
        for server in servers.values():
            server.wait_ready()
        requests = probes(bodies)
        differ = same_answers(servers, requests)
        print(f"{len(requests)} requests, every route, valid and refused: {len(differ)} answered differently")
        for line in differ:
            print("  differs:", line)
        unrouted = same_answers(servers, UNROUTED)
        print(f"{len(UNROUTED)} requests to paths no route has: {len(unrouted)} answered differently")
        for line in unrouted:
            print("  differs:", line)
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
    report = {
        "base": base_commit.strip(),
        "this": this_commit.strip(),
        "seconds": args.seconds,
        "differ": differ,
        "unrouted_differ": unrouted,
    }
    report["cases"] = {}
    print(f"{'case':<36} {'this':>12} {'base':>12} {'ratio':>7}   (images/s, median of {args.rounds} rounds)")
    for label, by in runs.items():
        this = statistics.median(r["images_per_second"] for r in by["this"])
        base = statistics.median(r["images_per_second"] for r in by["base"])
        report["cases"][label] = {"this": this, "base": base, "ratio": this / base, "runs": by}
        print(f"{label:<36} {this:>12,.0f} {base:>12,.0f} {this / base:>7.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
