"""Changes to the served set (load, unload, shadows), one management operation at a time over all workers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from modelstore.audit import Candidate, audit, latest_tag
from service.errors import RepositoryError, ShadowError
from service.repository.state import LOADING, READY, Desired, SharedState
from service.shadow.spec import LOADING as SHADOW_LOADING
from service.shadow.spec import ShadowSpec

log = logging.getLogger(__name__)


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
    """The tag of ``name``'s latest version in the store (:func:`modelstore.audit.latest_tag`), or None."""
    return latest_tag(name)


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
