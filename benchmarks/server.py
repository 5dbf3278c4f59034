"""Start and stop a real ``bentoml serve`` process for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


PROJECT_MODELS = {"SERVED_MODELS": "mnist_cnn,iris_l1"}
"""The environment of a server of the project's own two models only (the store may hold the examples and
others too): what the monitoring, resilience, soak and speed checks measure."""


def private_home(store: Path, home: Path) -> str:
    """A BENTOML_HOME of this server's own whose ``models`` is ``store``'s. ``bentoml serve`` keeps its
    metrics in ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties that folder at start: two servers
    on one home would wipe each other's metrics (seen: a second server's start erased the first's
    per-model gauges)."""
    home.mkdir(parents=True, exist_ok=True)
    link = home / "models"
    if not link.exists():
        link.symlink_to(store.resolve() / "models", target_is_directory=True)
    return str(home)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``bentoml serve service.service:SparsityService`` on 127.0.0.1, logs in ``log_path``; ``root``: the
    checkout to serve (another commit's worktree, for a comparison)."""

    def __init__(
        self,
        log_path: Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
        target: str = "service.service:SparsityService",
        root: Path = ROOT,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.readyz_seen: list[int | str] = []
        full_env = {**os.environ, "SERVICE_WORKERS": str(workers), "PYTHONPATH": str(root), **(env or {})}
        store = Path(full_env.get("BENTOML_HOME") or Path.home() / "bentoml")
        full_env["BENTOML_HOME"] = private_home(store, log_path.parent / f"bentoml-home-{log_path.stem}")
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "bentoml"),
                "serve",
                target,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=root,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status = httpx.get(f"{self.url}/readyz", timeout=2).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.readyz_seen.append(status)
            if status == 200:
                return
            time.sleep(0.25)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def __enter__(self) -> Server:
        """``with Server(...) as server``: ready on entry (stopped if it never gets there), stopped on exit."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_text()[-5000:]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
