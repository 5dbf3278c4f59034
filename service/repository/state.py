"""The served set every worker shares (a directory of JSON files), and each worker's thread that follows it."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from service.shadow.spec import ShadowSpec

log = logging.getLogger(__name__)

STATE_DIR_ENV = "SPARSITY_REPOSITORY_DIR"
LOADING, READY = "loading", "ready"
SYNC_SECONDS = 0.05
"""How often a worker looks for a new generation (one ``stat`` of ``served.json``)."""


@dataclass
class Desired:
    generation: int = 0
    models: dict[str, str] = field(default_factory=dict)
    shadows: dict[str, ShadowSpec] = field(default_factory=dict)

    def ready(self) -> list[str]:
        return [tag for tag, state in self.models.items() if state == READY]

    def drop_orphan_shadows(self) -> None:
        """A shadow whose primary or candidate left the set goes with it."""
        for name, spec in list(self.shadows.items()):
            if spec.primary_tag not in self.models or spec.candidate_tag not in self.models:
                del self.shadows[name]


def _write_json(path: Path, data) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


class SharedState:
    """The directory every worker reads: the desired set and the workers' acknowledgements."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        (self.directory / "workers").mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "served.json"

    @classmethod
    def create(cls, tags: list[str], shadows: dict[str, ShadowSpec] | None = None) -> SharedState:
        """A new directory holding ``tags`` as ready, and ``shadows`` (generation 1)."""
        state = cls(tempfile.mkdtemp(prefix="sparsity-repository-"))
        state.write(Desired(1, dict.fromkeys(tags, READY), dict(shadows or {})))
        return state

    def read(self) -> Desired:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return Desired()
        shadows = {name: ShadowSpec.from_json(name, spec) for name, spec in data.get("shadows", {}).items()}
        return Desired(int(data["generation"]), dict(data["models"]), shadows)

    def write(self, desired: Desired) -> None:
        shadows = {name: spec.to_json() for name, spec in desired.shadows.items()}
        _write_json(self.path, {"generation": desired.generation, "models": desired.models, "shadows": shadows})

    def stamp(self) -> int:
        try:
            return os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return 0

    @contextmanager
    def locked(self, name: str = "lock") -> Iterator[None]:
        with open(self.directory / name, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def change(self, edit: Callable[[dict[str, str]], None]) -> Desired:
        """Edit the desired models under the lock; the result is the next generation."""
        return self.edit(lambda desired: edit(desired.models))

    def edit(self, edit: Callable[[Desired], None]) -> Desired:
        """Edit the desired set under the lock (a shadow whose versions left goes too): the next generation."""
        with self.locked():
            desired = self.read()
            edit(desired)
            desired.drop_orphan_shadows()
            desired.generation += 1
            self.write(desired)
        return desired

    def ack(self, worker: int, generation: int, problems: dict[str, str], serving: list[str]) -> None:
        record = {"pid": os.getpid(), "generation": generation, "problems": problems, "serving": serving}
        _write_json(self.directory / "workers" / f"{worker}.json", record)

    def acks(self) -> dict[int, dict]:
        found = {}
        for path in (self.directory / "workers").glob("*.json"):
            try:
                found[int(path.stem)] = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
        return found


class WorkerSync:
    """One worker's follower of the desired set (see the module's docstring)."""

    def __init__(
        self,
        state: SharedState,
        plane,
        worker: int,
        loader: Callable[[str], object],
        drain_seconds: float = 30.0,
        interval: float = SYNC_SECONDS,
    ) -> None:
        self.state, self.plane, self.worker, self.loader = state, plane, worker, loader
        self.drain_seconds, self.interval = drain_seconds, interval
        self._stamp = -1
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def apply(self) -> Desired:
        """Bring this worker to the desired set now and acknowledge it."""
        from service.dataplane import LoadProblem

        self._stamp = self.state.stamp()
        desired = self.state.read()
        problems: dict[str, str] = {}
        for tag in desired.models:
            if tag in self.plane.loaded:
                continue
            try:
                self.plane.loaded[tag] = self.loader(tag)
                log.info("worker %s loaded %s", self.worker, tag)
            except LoadProblem as exc:
                problems[tag] = str(exc)
            except Exception as exc:
                log.exception("worker %s could not load %s", self.worker, tag)
                problems[tag] = f"model {tag}: {type(exc).__name__}: {exc}"
        self.plane.switch(desired.ready(), desired.shadows)
        for tag in [t for t in self.plane.loaded if t not in desired.models]:
            self.plane.release(tag, self.drain_seconds)
            log.info("worker %s unloaded %s", self.worker, tag)
        self.state.ack(self.worker, desired.generation, problems, self.plane.serving_tags())
        return desired

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                if self.state.stamp() != self._stamp:
                    self.apply()
            except Exception:
                log.exception("worker %s could not apply the served set", self.worker)
