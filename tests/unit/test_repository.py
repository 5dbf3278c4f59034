"""Loads and unloads across workers, in process: two data planes, each followed by its own WorkerSync thread
on one shared directory, as two BentoML workers would be. A load reaches both before either switches; a load
one worker cannot do is withdrawn with that worker's reason and the old version never stops; a worker that
does not answer makes the load time out and be withdrawn; a restarted worker serves what the others serve."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from service.dataplane import DataPlane, LoadProblem
from service.errors import RepositoryError, ShadowError
from service.repository.manager import Manager, Poller
from service.repository.state import READY, SharedState, WorkerSync
from tests.unit.test_oip import X, _toy


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory) -> dict:
    found = {}
    for i, tag in enumerate(("toy:v1", "toy:v2", "toy:v3", "other:v1"), start=1):
        runtime = _toy(tmp_path_factory.mktemp(tag.replace(":", "_")), tag, i)
        runtime.created = float(i)
        found[tag] = runtime
    return found


class Workers:
    """N data planes following one directory; ``refuse[(worker, tag)]`` makes that worker's load fail."""

    def __init__(self, directory, runtimes: dict, count: int = 2, start: tuple = ("toy:v1",)) -> None:
        self.state = SharedState(directory)
        self.state.write(type(self.state.read())(1, dict.fromkeys(start, READY)))
        self.runtimes, self.refuse, self.loads = runtimes, {}, []
        self.planes, self.syncs = [], []
        for worker in range(1, count + 1):
            self.start_worker(worker)

    def start_worker(self, worker: int) -> None:
        plane = DataPlane(max_image_pixels=10**6)

        def loader(tag, worker=worker):
            self.loads.append((worker, tag))
            if (worker, tag) in self.refuse:
                raise LoadProblem(self.refuse[(worker, tag)])
            return self.runtimes[tag]

        sync = WorkerSync(self.state, plane, worker, loader, drain_seconds=2, interval=0.01)
        sync.apply()
        sync.start()
        self.planes.append(plane)
        self.syncs.append(sync)

    def stop(self) -> None:
        for sync in self.syncs:
            sync.stop()

    def manager(self, count: int = 2, timeout: float = 5.0) -> Manager:
        resolver = lambda name, version: SimpleNamespace(tag=f"{name}:{version or self.latest(name)}")  # noqa: E731
        return Manager(self.state, count, timeout, resolver=resolver)

    def latest(self, name: str) -> str:
        return max(
            (t for t in self.runtimes if t.startswith(name + ":")), key=lambda t: self.runtimes[t].created
        ).split(":")[1]

    def answering(self) -> list[str]:
        return [plane.model("toy").tag for plane in self.planes]


@pytest.fixture
def workers(tmp_path, runtimes):
    found = Workers(tmp_path, {t: r for t, r in runtimes.items() if t != "toy:v3"})
    yield found
    found.stop()


def test_a_load_of_the_latest_replaces_the_old_version_in_every_worker(workers):
    assert workers.answering() == ["toy:v1", "toy:v1"]
    assert workers.manager().load("toy") == "toy:v2"
    assert workers.answering() == ["toy:v2", "toy:v2"]
    assert all(plane.versions("toy") == ["v2"] for plane in workers.planes)
    acks = workers.state.acks()
    assert sorted(acks) == [1, 2] and all(ack["serving"] == ["toy:v2"] for ack in acks.values())
    assert all("toy:v1" not in plane.loaded for plane in workers.planes)  # released


def test_a_load_by_version_serves_beside_and_the_newest_answers_the_name(workers):
    manager = workers.manager()
    manager.load("toy", "v2")
    manager.load("other", "v1")
    for plane in workers.planes:
        assert plane.versions("toy") == ["v2", "v1"] and plane.model("toy", "v1").tag == "toy:v1"
        assert plane.model("other").tag == "other:v1"
    assert manager.unload("toy", "v2") == ["toy:v2"]
    assert workers.answering() == ["toy:v1", "toy:v1"]
    assert manager.unload("other") == ["other:v1"]
    with pytest.raises(RepositoryError) as refused:
        manager.unload("other")
    assert refused.value.status == 404 and "not loaded" in str(refused.value)


def test_a_load_one_worker_cannot_do_is_withdrawn_and_the_old_version_never_stops(workers):
    workers.refuse[(2, "toy:v2")] = "model toy:v2: layer hidden has [3] exact zeros, registration measured [4]"
    seen, stop = set(), threading.Event()

    def watch():
        while not stop.is_set():
            seen.update(workers.answering())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(RepositoryError) as refused:
            workers.manager().load("toy")
    finally:
        stop.set()
        watcher.join()
    assert "registration measured [4]" in str(refused.value) and refused.value.status == 400
    assert seen == {"toy:v1"}  # worker 1 had loaded v2, but nobody switched to it
    assert workers.answering() == ["toy:v1", "toy:v1"]
    assert workers.state.read().models == {"toy:v1": READY}
    assert all("toy:v2" not in plane.loaded for plane in workers.planes)


def test_a_worker_that_does_not_answer_times_the_load_out(workers):
    with pytest.raises(RepositoryError) as refused:
        workers.manager(count=3, timeout=0.5).load("toy")
    assert refused.value.status == 503 and "worker(s) 3 did not apply the change within 0.5 s" in str(refused.value)
    assert workers.state.read().models == {"toy:v1": READY}
    time.sleep(0.1)
    assert workers.answering() == ["toy:v1", "toy:v1"]


def test_a_restarted_worker_serves_what_the_others_serve(workers):
    workers.manager().load("toy", "v2")
    workers.start_worker(3)
    assert workers.planes[2].versions("toy") == ["v2", "v1"]
    assert workers.state.acks()[3]["generation"] == workers.state.read().generation


def test_requests_in_flight_finish_before_a_version_is_released(workers):
    plane = workers.planes[0]
    runtime = plane.model("toy")
    slow, entered = threading.Event(), threading.Event()
    original = runtime.predict

    def held(x):
        entered.set()
        slow.wait(5)
        return original(x)

    runtime.predict = held
    try:
        answer = []
        request = threading.Thread(target=lambda: answer.append(plane.infer(runtime, X)))
        request.start()
        entered.wait(5)
        unloading = threading.Thread(target=workers.manager().load, args=("toy",))
        unloading.start()
        time.sleep(0.3)
        assert "toy:v1" in plane.loaded  # still draining
        slow.set()
        request.join(5)
        unloading.join(5)
    finally:
        runtime.predict = original
    assert len(answer) == 1 and answer[0].probabilities.shape == (3, 3)
    assert "toy:v1" not in plane.loaded and workers.answering() == ["toy:v2", "toy:v2"]


def test_the_poller_loads_a_new_latest_version_once_and_does_not_retry_a_failure(tmp_path, runtimes):
    workers = Workers(tmp_path, runtimes)
    try:
        latest = {"toy": "toy:v2"}
        poller = Poller(workers.manager(), period=60, latest=latest.get)
        first = poller.poll_once()
        assert first == ["toy:v2"], poller.failed
        assert poller.poll_once() == []
        latest["toy"] = "toy:v3"
        workers.refuse[(1, "toy:v3")] = "broken"
        assert poller.poll_once() == [] and poller.failed == {"toy:v3"}
        assert poller.poll_once() == [] and workers.loads.count((1, "toy:v3")) == 1
        assert workers.answering() == ["toy:v2", "toy:v2"]
    finally:
        workers.stop()


def test_the_metrics_follow_the_versions(workers):
    manager = workers.manager()
    manager.load("toy", "v2")
    plane = workers.planes[0]
    assert set(plane.recorder.models) == {"toy:v1", "toy:v2"}
    plane.infer(plane.model("toy", "v1"), X)
    manager.unload("toy", "v1")
    assert set(plane.recorder.models) == {"toy:v2"}
    assert np.isfinite(plane.infer(plane.model("toy"), X).probabilities).all()


def test_a_supervisor_makes_its_own_served_set_and_its_workers_join_it(monkeypatch):
    from modelstore.audit import Candidate
    from service import app
    from service.repository.state import STATE_DIR_ENV

    configuration = SimpleNamespace(accepted=[Candidate("toy", "toy:v1", card=object())], shadows={})
    monkeypatch.setenv(STATE_DIR_ENV, "/nonexistent/another-service")
    supervisor = app.shared_state(configuration, in_worker=False)
    assert str(supervisor.directory) != "/nonexistent/another-service"  # an inherited value is not joined
    assert supervisor.read().models == {"toy:v1": READY}
    assert os.environ[STATE_DIR_ENV] == str(supervisor.directory)
    assert app.shared_state(configuration, in_worker=True).directory == supervisor.directory


def test_a_shadow_loads_its_candidate_everywhere_keeps_the_primary_and_leaves_with_its_candidate(workers):
    manager = workers.manager()
    spec = manager.set_shadow("toy", "v2", 0.5, "mirror", primary="v1")
    assert (spec.primary, spec.candidate, spec.state, spec.loaded) == ("v1", "v2", "active", True)
    assert workers.answering() == ["toy:v1", "toy:v1"]  # the newer candidate does not take the name
    for plane in workers.planes:
        assert plane.versions("toy") == ["v1", "v2"] and plane.shadows.mirrors["toy:v1"].spec == spec
    with pytest.raises(ShadowError, match="is the version answering toy"):
        manager.set_shadow("toy", "v1", 0.5, "mirror", primary="v1")
    share = manager.set_shadow("toy", "v2", 1.0, "canary", primary="v1")  # a new spec: the candidate stays loaded
    assert share.loaded and share.id != spec.id
    assert all(plane.shadows.canaries["toy"] == share and not plane.shadows.mirrors for plane in workers.planes)
    assert manager.remove_shadow("toy") == share
    assert workers.answering() == ["toy:v1", "toy:v1"]
    assert all("toy:v2" not in plane.loaded and not plane.shadow_specs for plane in workers.planes)  # unloaded
    with pytest.raises(RepositoryError) as refused:
        manager.remove_shadow("toy")
    assert refused.value.status == 404 and str(refused.value) == "model toy has no shadow"


def test_a_candidate_a_worker_cannot_load_is_withdrawn_and_a_load_of_the_latest_ends_the_shadow(workers):
    manager = workers.manager()
    workers.refuse[(2, "toy:v2")] = "model toy:v2: layer hidden has [3] exact zeros, registration measured [4]"
    with pytest.raises(RepositoryError, match="registration measured"):
        manager.set_shadow("toy", "v2", 0.5, "mirror", primary="v1")
    desired = workers.state.read()
    assert desired.models == {"toy:v1": READY} and desired.shadows == {}
    del workers.refuse[(2, "toy:v2")]
    manager.set_shadow("toy", "v2", 0.5, "mirror", primary="v1")
    manager.load("toy")  # the latest, replacing the others: the primary leaves, and the shadow with it
    assert workers.state.read().shadows == {} and workers.answering() == ["toy:v2", "toy:v2"]
