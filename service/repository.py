"""The model repository while serving: which versions serve, changed without a restart, in every worker.

BentoML's workers are separate processes that share nothing but the model store, so the served set lives in
a directory they all read (``SPARSITY_REPOSITORY_DIR``, made by the supervising process at start):

- ``served.json``: the **desired** set, ``{"generation": g, "models": {tag: "loading" | "ready"}, "shadows":
  {name: spec}}`` (:mod:`service.shadow`), written whole (a temporary file renamed over it) under a file lock;
- ``workers/<index>.json``: each worker's **acknowledgement** of the generation it has applied, with the
  tags it could not load and why.

Each worker runs a :class:`WorkerSync` thread that notices a new generation (one ``stat`` every
``SYNC_SECONDS``), loads what is new (audit, load, warm-up, replay of the card's examples), switches its
data plane to the ``ready`` tags in one step, releases what left (after its requests in flight), and
acknowledges.

A load (:meth:`Manager.load`, in whichever worker received the request) is a two-step change, one
management operation at a time over all workers:

1. the tag is added as ``loading``: every worker loads and checks it while the previous version serves;
2. when every worker has acknowledged it without a problem, it becomes ``ready`` (and, for a load of a
   name's latest version, the name's other versions leave): every worker switches.

If any worker cannot load it, or not within the timeout, the tag is withdrawn, the previous version never
stopped serving, and the load answers with the first worker's reason. A worker that restarts reads the
desired set at start, so it serves what the others serve.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from modelstore.audit import Candidate, audit
from service.shadow import LOADING as SHADOW_LOADING
from service.shadow import ShadowError, ShadowSpec

log = logging.getLogger(__name__)

STATE_DIR_ENV = "SPARSITY_REPOSITORY_DIR"
LOADING, READY = "loading", "ready"
SYNC_SECONDS = 0.05
"""How often a worker looks for a new generation (one ``stat`` of ``served.json``)."""


class RepositoryError(Exception):
    """A repository request that cannot be done: ``status`` (HTTP's) and one line saying why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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


def resolve(name: str, version: str | None) -> Candidate:
    """The stored model a load names, audited: ``name``'s latest version, or ``version``."""
    tag = f"{name}:{version or 'latest'}"
    candidate = audit(tag)
    if not candidate.found:
        raise RepositoryError(f"model {tag} is not in the store", status=404)
    if not candidate.accepted:
        raise RepositoryError(candidate.problem)
    return candidate


class Manager:
    """Loads and unloads versions in every worker (one operation at a time), and lists the repository."""

    def __init__(
        self,
        state: SharedState,
        workers: int,
        timeout: float,
        resolver: Callable[[str, str | None], Candidate] = resolve,
    ) -> None:
        self.state, self.workers, self.timeout, self.resolver = state, workers, timeout, resolver

    def load(self, name: str, version: str | None = None, replace: bool | None = None) -> str:
        """Load ``name`` (its latest stored version, replacing the versions serving; or ``version``, added
        beside them; ``replace`` overrides which) in every worker and switch to it; RepositoryError says why
        not. Returns the tag."""
        replace = version is None if replace is None else replace
        with self.state.locked("manage.lock"):
            tag = self.resolver(name, version).tag
            before = self.state.read().models.get(tag)
            generation = self.state.change(lambda models: models.__setitem__(tag, models.get(tag, LOADING)))
            try:
                acks = self.wait(generation.generation)
            except RepositoryError:
                self._withdraw(tag, before)
                raise
            problems = [ack["problems"][tag] for _, ack in sorted(acks.items()) if tag in ack["problems"]]
            if problems:
                self._withdraw(tag, before)
                raise RepositoryError(problems[0])

            def promote(models: dict[str, str]) -> None:
                models[tag] = READY
                if replace:  # the latest replaces the name's other versions
                    for other in [t for t in models if t.partition(":")[0] == name and t != tag]:
                        del models[other]

            self.wait(self.state.change(promote).generation)
            return tag

    def unload(self, name: str, version: str | None = None) -> list[str]:
        """Stop serving ``name`` (every version, or ``version``) in every worker, after the requests in flight."""
        with self.state.locked("manage.lock"):
            desired = self.state.read()
            tags = [t for t in desired.models if t.partition(":")[0] == name and version in (None, t.partition(":")[2])]
            if not tags:
                which = name if version is None else f"{name}:{version}"
                raise RepositoryError(f"model {which} is not loaded", status=404)

            def remove(models: dict[str, str]) -> None:
                for tag in tags:
                    models.pop(tag, None)

            self.wait(self.state.change(remove).generation)
            return tags

    def set_shadow(self, name: str, version: str, share: float, mode: str, primary: str) -> ShadowSpec:
        """Mirror ``share`` of ``name``'s requests to ``version`` (or, as a canary, answer them with it), in every
        worker; the candidate is loaded first if it is not (the primary, ``primary``, pinned meanwhile). Replaces
        the name's shadow. RepositoryError (404: not in the store) or ShadowError says why not."""
        import secrets

        with self.state.locked("manage.lock"):
            tag = self.resolver(name, version).tag
            version = tag.partition(":")[2]
            if version == primary:
                raise ShadowError(f"{tag} is the version answering {name}: shadow another one", "version")
            desired = self.state.read()
            old = desired.shadows.get(name)
            if old is not None and old.primary != primary:
                primary = old.primary
            keeps_load = old is not None and old.candidate == version and old.loaded
            spec = ShadowSpec(
                name, primary, version, share, mode, id=secrets.token_hex(4), since=time.time(),
                state=SHADOW_LOADING, loaded=keeps_load or tag not in desired.models,
            )  # fmt: skip
            if tag not in desired.models:
                self._load_pinned(spec, old)

            def activate(desired: Desired) -> None:
                desired.models[tag] = READY
                desired.shadows[name] = spec.activated()
                if old is not None and old.loaded and old.candidate != version:
                    desired.models.pop(old.candidate_tag, None)  # the replaced shadow's own candidate

            self.wait(self.state.edit(activate).generation)
            return spec.activated()

    def _load_pinned(self, spec: ShadowSpec, old: ShadowSpec | None) -> None:
        """Load a shadow's candidate in every worker while the spec (still loading) pins the primary."""
        tag = spec.candidate_tag

        def add(desired: Desired) -> None:
            desired.models[tag] = LOADING
            desired.shadows[spec.name] = spec

        def undo(desired: Desired) -> None:
            desired.models.pop(tag, None)
            desired.shadows.pop(spec.name, None)
            if old is not None:
                desired.shadows[spec.name] = old

        acks = None
        try:
            acks = self.wait(self.state.edit(add).generation)
        finally:
            problems = [ack["problems"][tag] for _, ack in sorted((acks or {}).items()) if tag in ack["problems"]]
            if acks is None or problems:
                try:
                    self.wait(self.state.edit(undo).generation)
                except RepositoryError as exc:
                    log.warning("withdrawing %s: %s", tag, exc)
        if problems:
            raise RepositoryError(problems[0])

    def remove_shadow(self, name: str) -> ShadowSpec:
        """Stop ``name``'s shadow in every worker (and unload its candidate if the shadow loaded it)."""
        with self.state.locked("manage.lock"):
            spec = self.state.read().shadows.get(name)
            if spec is None:
                raise RepositoryError(f"model {name} has no shadow", status=404)

            def remove(desired: Desired) -> None:
                desired.shadows.pop(name, None)
                if spec.loaded:
                    desired.models.pop(spec.candidate_tag, None)

            self.wait(self.state.edit(remove).generation)
            return spec

    def _withdraw(self, tag: str, before: str | None) -> None:
        def undo(models: dict[str, str]) -> None:
            if before is None:
                models.pop(tag, None)
            else:
                models[tag] = before

        try:
            self.wait(self.state.change(undo).generation)
        except RepositoryError as exc:
            log.warning("withdrawing %s: %s", tag, exc)

    def wait(self, generation: int) -> dict[int, dict]:
        """Every worker's acknowledgement of ``generation`` (or a later one); RepositoryError past the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            acks = self.state.acks()
            behind = [w for w in range(1, self.workers + 1) if acks.get(w, {}).get("generation", 0) < generation]
            if not behind:
                return acks
            if time.monotonic() > deadline:
                late = ", ".join(str(w) for w in behind)
                raise RepositoryError(f"worker(s) {late} did not apply the change within {self.timeout:g} s", 503)
            time.sleep(0.02)

    def index(self, ready_only: bool = False) -> list[dict]:
        """Every stored version of every model, with its state here (Triton's repository index)."""
        import bentoml

        desired = self.state.read().models
        acks = self.state.acks()
        entries = []
        for stored in sorted(bentoml.models.list(), key=lambda m: (m.tag.name, -m.info.creation_time.timestamp())):
            tag = str(stored.tag)
            state = {READY: "READY", LOADING: "LOADING"}.get(desired.get(tag), "UNAVAILABLE")
            if ready_only and state != "READY":
                continue
            entry = {"name": stored.tag.name, "version": stored.tag.version, "state": state, "reason": ""}
            reasons = [ack["problems"][tag] for ack in acks.values() if tag in ack.get("problems", {})]
            if reasons and state != "READY":
                entry["reason"] = reasons[0]
            entries.append(entry)
        return entries


def latest_stored(name: str) -> str | None:
    """The tag of ``name``'s latest version in the store, or None."""
    import bentoml

    try:
        return str(bentoml.models.get(f"{name}:latest").tag)
    except bentoml.exceptions.NotFound:
        return None


class Poller:
    """``MODEL_POLL_SECONDS``: every period, load the latest stored version of each served name when it is
    newer than what serves (TF Serving's and Triton's poll modes, without the gap: the old version serves
    until the new one is ready in every worker). Runs in worker 1 only; a version that failed is not retried."""

    def __init__(self, manager: Manager, period: float, latest: Callable[[str], str | None] | None = None) -> None:
        self.manager, self.period = manager, period
        self.latest = latest or latest_stored
        self.failed: set[str] = set()
        self._stopped = threading.Event()

    def poll_once(self) -> list[str]:
        loaded = []
        desired = self.manager.state.read().models
        for name in sorted({tag.partition(":")[0] for tag in desired}):
            latest = self.latest(name)
            if latest is None or latest in desired or latest in self.failed:
                continue
            try:
                loaded.append(self.manager.load(name, latest.partition(":")[2], replace=True))
                log.info("poll: now serving %s", latest)
            except RepositoryError as exc:
                self.failed.add(latest)
                log.warning("poll: not serving %s: %s", latest, exc)
        return loaded

    def start(self) -> None:
        threading.Thread(target=self._run, name="model-poll", daemon=True).start()

    def _run(self) -> None:
        while not self._stopped.wait(self.period):
            try:
                self.poll_once()
            except Exception:
                log.exception("poll failed")
