"""Background tuning: a bounded job queue on worker threads, one job per kernel key at a time."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from runtime.stats import TuningStats

log = logging.getLogger("tessera.runtime.tuning")

Job = Callable[[], None]
Done = Callable[[str, "BaseException | None"], None]


class TuningQueue:
    """Runs jobs on `workers` daemon threads, never on the submitting thread.

    `submit` refuses (returns False) a key already queued or running, and any job once
    `max_pending` jobs wait; the caller keeps serving at its tier and may submit again later.
    A job that raises is logged and reported to its `on_done` callback as failed.
    """

    def __init__(self, *, workers: int, max_pending: int, name: str = "tessera-tune") -> None:
        self._workers = workers
        self._jobs: queue.Queue[tuple[str, Job, Done] | None] = queue.Queue(maxsize=max_pending)
        self._name = name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._finished = 0
        self._failed = 0
        self._dropped = 0
        self._closed = False

    def submit(self, key: str, job: Job, on_done: Done) -> bool:
        """Queue `job` for `key`; False if tuning is off, the key is in flight or the queue full."""
        with self._lock:
            if self._workers == 0 or self._closed:
                return False
            if key in self._queued or key in self._running:
                return False
            try:
                self._jobs.put_nowait((key, job, on_done))
            except queue.Full:
                self._dropped += 1
                log.info("tuning queue full; %s not queued (retried on a later call)", key)
                return False
            self._queued.add(key)
            if len(self._threads) < self._workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return True

    def in_flight(self, key: str) -> bool:
        with self._lock:
            return key in self._queued or key in self._running

    def stats(self) -> TuningStats:
        with self._lock:
            return TuningStats(
                queued=len(self._queued),
                running=len(self._running),
                finished=self._finished,
                failed=self._failed,
                dropped=self._dropped,
            )

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until no job is queued or running; False if `timeout_s` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._idle:
            while self._queued or self._running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, *, timeout_s: float | None = None) -> None:
        """Stop accepting jobs, cancel those not started, and join the workers.

        A job already running is waited for (up to `timeout_s`); its thread is a daemon, so
        an interpreter exit never hangs on it.
        """
        with self._idle:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._queued.discard(item[0])
                    self._dropped += 1
            self._idle.notify_all()
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            key, job, on_done = item
            with self._lock:
                self._queued.discard(key)
                self._running.add(key)
            error: BaseException | None = None
            try:
                job()
            except BaseException as exc:
                # A failed tune must never kill the worker, nor leave its key "running"
                # forever (wait_idle would then never return): even SystemExit from deep
                # in a library only fails this job.
                error = exc
                log.warning("tuning %s failed: %s: %s", key, type(exc).__name__, exc)
            try:
                on_done(key, error)
            except Exception:
                log.exception("tuning callback for %s failed", key)
            finally:
                with self._idle:
                    self._running.discard(key)
                    if error is None:
                        self._finished += 1
                    else:
                        self._failed += 1
                    self._idle.notify_all()
