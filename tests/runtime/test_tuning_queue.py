"""The background tuning queue: one job per key, bounded, failures reported, close cancels."""

from __future__ import annotations

import threading
import time

from runtime.tuning_queue import TuningQueue


def _wait_until(condition, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_a_failing_job_is_reported_and_the_worker_keeps_going() -> None:
    outcomes: dict[str, BaseException | None] = {}
    tuning = TuningQueue(workers=1, max_pending=4)

    def boom() -> None:
        raise RuntimeError("nvrtc exploded")

    assert tuning.submit("a", boom, outcomes.__setitem__)
    assert tuning.submit("b", lambda: None, outcomes.__setitem__)
    assert tuning.wait_idle(10)
    assert isinstance(outcomes["a"], RuntimeError) and outcomes["b"] is None
    stats = tuning.stats()
    assert (stats.finished, stats.failed, stats.queued, stats.running) == (1, 1, 0, 0)
    tuning.close()


def test_same_key_is_refused_while_in_flight_and_accepted_after() -> None:
    gate = threading.Event()
    tuning = TuningQueue(workers=1, max_pending=4)
    runs: list[str] = []

    def job() -> None:
        gate.wait(10)
        runs.append("k")

    assert tuning.submit("k", job, lambda key, err: None)
    assert not tuning.submit("k", job, lambda key, err: None)
    gate.set()
    assert tuning.wait_idle(10)
    assert tuning.submit("k", job, lambda key, err: None)
    assert tuning.wait_idle(10)
    assert runs == ["k", "k"]
    tuning.close()


def test_no_workers_means_nothing_is_ever_queued() -> None:
    tuning = TuningQueue(workers=0, max_pending=4)
    assert not tuning.submit("k", lambda: None, lambda key, err: None)
    assert tuning.stats().queued == 0


def test_close_cancels_queued_jobs_and_waits_for_the_running_one() -> None:
    gate = threading.Event()
    ran: list[str] = []
    tuning = TuningQueue(workers=1, max_pending=4)

    def job(name: str) -> None:
        gate.wait(10)
        ran.append(name)

    tuning.submit("running", lambda: job("running"), lambda key, err: None)
    _wait_until(lambda: tuning.stats().running == 1)
    tuning.submit("queued", lambda: job("queued"), lambda key, err: None)
    threading.Timer(0.05, gate.set).start()
    tuning.close(timeout_s=10)
    assert ran == ["running"]
    stats = tuning.stats()
    assert (stats.finished, stats.dropped, stats.queued) == (1, 1, 0)
    assert not tuning.submit("late", lambda: None, lambda key, err: None)


def test_a_job_raising_system_exit_fails_alone_and_never_stays_running() -> None:
    outcomes: dict[str, BaseException | None] = {}
    tuning = TuningQueue(workers=1, max_pending=4)

    def exits() -> None:
        raise SystemExit(3)  # e.g. a library's CLI helper called from the tuner

    assert tuning.submit("a", exits, outcomes.__setitem__)
    assert tuning.submit("b", lambda: None, outcomes.__setitem__)
    assert tuning.wait_idle(5), "the key of the failed job is still 'running'"
    assert isinstance(outcomes["a"], SystemExit) and outcomes["b"] is None
    stats = tuning.stats()
    assert (stats.finished, stats.failed, stats.running) == (1, 1, 0)
    assert not tuning.in_flight("a")
    tuning.close(timeout_s=5)
