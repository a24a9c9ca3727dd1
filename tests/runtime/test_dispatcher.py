"""Tier choice, promotion, demotion and background tuning, driven through injected fake backends."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from runtime_fakes import FakeBackends, FakeClock, FakeKernel, qkv

from runtime import Runtime, RuntimeConfig
from runtime.tiers import Kernel
from tessera_core.errors import EmulatorError
from tessera_core.types import Problem


def _runtime(backends: FakeBackends, **overrides: object) -> Runtime:
    settings: dict[str, object] = {"tier2_min_calls": 2, "tier3_min_calls": 4}
    settings.update(overrides)
    return Runtime(config=RuntimeConfig(**settings), backends=backends)  # type: ignore[arg-type]


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def _call_tiers(rt: Runtime) -> list[int]:
    return [r.tier for r in rt.history() if r.event == "call"]


def test_promotion_happens_at_the_configured_call_counts() -> None:
    backends = FakeBackends()
    rt = _runtime(backends, tuning_workers=1)
    q, k, v = qkv()
    for _ in range(5):
        rt.attention(q, k, v)
    # Calls 1-2 at tier 1; after 2 calls tier 2; after 4 calls the cache misses and a tune
    # is queued while the 5th call still runs at tier 2.
    assert _call_tiers(rt) == [1, 1, 2, 2, 2]
    assert rt.wait_for_tuning(10)
    out = rt.attention(q, k, v)
    assert _call_tiers(rt)[-1] == 3
    assert np.all(out == 3)
    stats = rt.stats()
    assert (stats.tiers[1].count, stats.tiers[2].count, stats.tiers[3].count) == (2, 3, 1)
    assert stats.promotions == 2 and stats.demotions == 0
    assert stats.tuning.finished == 1 and stats.tuning.failed == 0
    assert stats.loaded_kernels == ["attention_fwd.fp16.b1.h2.sq16.skv16.d16.noncausal.sm_90"]
    events = [(r.event, r.tier) for r in rt.history() if r.event != "call"]
    assert events == [("promote", 2), ("tune", 2), ("tune", 2), ("promote", 3)]
    rt.close()


def test_promotion_by_cumulative_time_uses_the_recorded_wall_times() -> None:
    # Each run takes exactly 0.02 ms on the injected clock: 3 runs reach the 0.05 ms threshold,
    # so the 4th call is the first at tier 2, whatever the machine's speed or load.
    clock = FakeClock()
    backends = FakeBackends(clock=clock, run_ms=0.02)
    rt = Runtime(
        config=RuntimeConfig(tier2_min_calls=0, tier2_min_time_ms=0.05, tier3=False),
        backends=backends,
        clock_ns=clock,
    )
    q, k, v = qkv(seq=64)
    for _ in range(6):
        rt.attention(q, k, v)
    calls = [r for r in rt.history() if r.event == "call"]
    assert [r.tier for r in calls] == [1, 1, 1, 2, 2, 2]
    assert [r.wall_ms for r in calls] == pytest.approx([0.02] * 6)
    tier1 = rt.stats().tiers[1]
    assert (tier1.count, tier1.mean_ms) == (3, pytest.approx(0.02))
    (promote,) = [r for r in rt.history() if r.event == "promote"]
    assert "total_ms=0.060" in promote.detail


def test_the_default_clock_records_real_run_times() -> None:
    rt = _runtime(FakeBackends(), tier2=False, tier3=False)
    q, k, v = qkv()
    rt.attention(q, k, v)
    (call,) = rt.history()
    assert call.wall_ms >= 0.0


def test_cached_specialized_kernel_is_loaded_without_tuning() -> None:
    backends = FakeBackends()
    backends.cached.add("attention_fwd.fp16.b1.h2.sq16.skv16.d16.noncausal.sm_90")
    rt = _runtime(backends, tier2=False, tier3_min_calls=1, tuning_workers=1)
    q, k, v = qkv()
    rt.attention(q, k, v)
    rt.attention(q, k, v)
    assert _call_tiers(rt) == [1, 3]
    assert backends.tuned == [] and backends.generic_builds == {}


def test_failed_background_tune_leaves_the_signature_at_its_tier() -> None:
    backends = FakeBackends()
    backends.tune_fails = True
    rt = _runtime(backends, tuning_workers=1)
    q, k, v = qkv()
    for _ in range(5):
        rt.attention(q, k, v)
    assert rt.wait_for_tuning(10)
    for _ in range(5):
        rt.attention(q, k, v)
    assert _call_tiers(rt)[2:] == [2] * 8
    stats = rt.stats()
    assert stats.tuning.failed == 1 and stats.tuning.finished == 0
    assert len(backends.tuned) == 1, "a failed tune must not be resubmitted on every call"
    failed = [r for r in rt.history() if r.event == "tune" and not r.ok]
    assert len(failed) == 1 and "injected tuning failure" in failed[0].detail


def test_tuning_runs_off_the_caller_thread_and_never_blocks_it() -> None:
    backends = FakeBackends()
    backends.tune_gate = threading.Event()
    rt = _runtime(backends, tuning_workers=1)
    q, k, v = qkv()
    try:
        for _ in range(8):  # the tuner is stuck on its gate all along
            rt.attention(q, k, v)
        stats = rt.stats()
        assert stats.tuning.running + stats.tuning.queued == 1
        assert _call_tiers(rt)[-1] == 2
    finally:
        backends.tune_gate.set()
    assert rt.wait_for_tuning(10)
    assert backends.tune_threads and threading.get_ident() not in backends.tune_threads
    rt.attention(q, k, v)
    assert _call_tiers(rt)[-1] == 3


def test_one_tuning_job_per_kernel_key_and_a_bounded_queue() -> None:
    backends = FakeBackends()
    backends.tune_gate = threading.Event()
    rt = _runtime(backends, tier2=False, tier3_min_calls=1, tuning_workers=1, tuning_queue_size=1)
    try:
        for seq in (16, 32, 48):
            q, k, v = qkv(seq=seq)
            for scale in (None, 0.5):  # two signatures, one problem: one job
                rt.attention(q, k, v, scale=scale)
                rt.attention(q, k, v, scale=scale)
            if seq == 16:
                _wait_until(lambda: rt.stats().tuning.running == 1)
        stats = rt.stats()
        # seq 16 runs (blocked), seq 32 waits in the queue of one, seq 48 is refused.
        assert (stats.tuning.running, stats.tuning.queued) == (1, 1)
        assert stats.tuning.dropped >= 1
    finally:
        backends.tune_gate.set()
    assert rt.wait_for_tuning(10)
    q, k, v = qkv(seq=48)
    rt.attention(q, k, v)  # the refused one is submitted again on a later call
    assert rt.wait_for_tuning(10)
    assert sorted(backends.tuned) == sorted(set(backends.tuned))
    assert len(backends.tuned) == 3


def test_generic_kernel_is_built_once_per_problem_class() -> None:
    backends = FakeBackends()
    rt = _runtime(backends, tier2_min_calls=0, tier3=False)
    for seq in (16, 32, 48):
        q, k, v = qkv(seq=seq)
        rt.attention(q, k, v)
        rt.attention(q, k, v, causal=True)
    assert backends.generic_builds == {
        "attention_fwd.fp16.d16.noncausal.sm_90.generic": 1,
        "attention_fwd.fp16.d16.causal.sm_90.generic": 1,
    }
    assert set(_call_tiers(rt)) == {2}


def test_generic_compile_failure_keeps_tier_1() -> None:
    backends = FakeBackends()
    backends.generic_fails = True
    rt = _runtime(backends, tier2_min_calls=0, tier3=False)
    q, k, v = qkv()
    for _ in range(3):
        out = rt.attention(q, k, v)
    assert _call_tiers(rt) == [1, 1, 1]
    assert np.all(out == 1)
    assert sum(backends.generic_builds.values()) == 1


def test_failing_compiled_kernel_is_demoted_and_the_call_still_answers() -> None:
    backends = FakeBackends()
    key = "attention_fwd.fp16.b1.h2.sq16.skv16.d16.noncausal.sm_90"
    backends.cached.add(key)
    rt = _runtime(backends, tier2_min_calls=0, tier3_min_calls=0)
    q, k, v = qkv()
    rt.attention(q, k, v)
    assert _call_tiers(rt) == [3]
    backends.kernels[key].fail = True
    out = rt.attention(q, k, v)
    assert np.all(out == 2), "a failing tier 3 falls back to the generic kernel"
    rt.attention(q, k, v)
    calls = [r for r in rt.history() if r.event == "call"]
    assert [(r.tier, r.ok) for r in calls] == [(3, True), (3, False), (2, True), (2, True)]
    stats = rt.stats()
    assert stats.failed_calls == 1 and stats.demotions == 1 and stats.total_calls == 3


def test_without_fallback_a_failing_kernel_raises_and_is_traced_as_failed() -> None:
    backends = FakeBackends()
    rt = _runtime(backends, tier2_min_calls=0, tier3=False, tier1_fallback=False)
    q, k, v = qkv()
    rt.attention(q, k, v)
    backends.kernels["attention_fwd.fp16.d16.noncausal.sm_90.generic"].fail = True
    with pytest.raises(EmulatorError, match="injected fault"):
        rt.attention(q, k, v)
    calls = [r for r in rt.history() if r.event == "call"]
    assert [(r.tier, r.ok) for r in calls] == [(2, True), (2, False)]
    assert rt.stats().total_calls == 1


def test_loaded_kernels_are_bounded_by_an_lru() -> None:
    backends = FakeBackends()
    shapes = (16, 32)
    for seq in shapes:
        backends.cached.add(f"attention_fwd.fp16.b1.h2.sq{seq}.skv{seq}.d16.noncausal.sm_90")
    rt = _runtime(backends, tier2=False, tier3_min_calls=0, max_loaded_kernels=1)
    for seq in (16, 32, 16):
        q, k, v = qkv(seq=seq)
        rt.attention(q, k, v)
    stats = rt.stats()
    assert _call_tiers(rt) == [3, 3, 3]
    assert stats.loaded_kernels == ["attention_fwd.fp16.b1.h2.sq16.skv16.d16.noncausal.sm_90"]
    assert stats.demotions == 2  # each load evicted the other one


def test_cpu_device_builds_and_tunes_but_executes_tier_1() -> None:
    backends = FakeBackends(device="cpu", executes_compiled=False)
    rt = _runtime(backends, tier2_min_calls=0, tier3_min_calls=1, tuning_workers=1)
    q, k, v = qkv()
    for _ in range(3):
        rt.attention(q, k, v)
    assert rt.wait_for_tuning(10)
    for _ in range(2):
        out = rt.attention(q, k, v)
    assert set(_call_tiers(rt)) == {1} and np.all(out == 1)
    assert sum(backends.generic_builds.values()) == 1
    assert backends.tuned == ["attention_fwd.fp16.b1.h2.sq16.skv16.d16.noncausal.sm_90"]


def test_forced_config_runs_that_config_and_traces_it() -> None:
    backends = FakeBackends()
    rt = _runtime(backends)
    a = np.ones((32, 16), np.float16)
    b = np.ones((16, 32), np.float16)
    config = {"block_m": 32, "block_n": 32, "block_k": 16, "num_warps": 4, "num_stages": 2}
    out = rt.gemm(a, b, config=config)
    assert np.all(out == 2)
    (record,) = rt.history()
    assert record.tier == 2 and record.config == config and record.op == "gemm"


def test_forced_invalid_config_is_refused_before_running() -> None:
    backends = FakeBackends()
    rt = _runtime(backends)
    q, k, v = qkv()
    with pytest.raises(ValueError, match="block_m"):
        rt.attention(
            q,
            k,
            v,
            config={"block_m": 48, "block_n": 64, "block_k": 16, "num_warps": 4, "num_stages": 2},
        )
    with pytest.raises(ValueError, match="missing"):
        rt.attention(q, k, v, config={"block_m": 64})
    assert rt.history() == [] and rt.stats().total_calls == 0


def test_hotspots_use_the_configured_criteria() -> None:
    rt = _runtime(FakeBackends(), hotspot_min_count=3, tier2=False, tier3=False)
    for seq, calls in ((16, 3), (32, 2)):
        q, k, v = qkv(seq=seq)
        for _ in range(calls):
            rt.attention(q, k, v)
    (hotspot,) = rt.hotspots()
    assert hotspot.count == 3 and hotspot.problem.shape_str() == "1x2x16x16x16"


class _BrokenSpecialized(FakeBackends):
    """Every specialized kernel it loads fails when run."""

    def specialized(self, problem: Problem) -> Kernel | None:
        kernel = super().specialized(problem)
        if isinstance(kernel, FakeKernel):
            kernel.fail = True
        return kernel


def test_a_failed_specialized_kernel_is_not_promoted_again() -> None:
    # tier 3 reached before tier 2 (a valid config): the demotion leaves the signature
    # unsettled, and the broken kernel, still loaded, must not be promoted once more.
    backends = _BrokenSpecialized()
    key = "attention_fwd.fp16.b1.h2.sq16.skv16.d16.noncausal.sm_90"
    backends.cached.add(key)
    rt = _runtime(backends, tier2_min_calls=5, tier3_min_calls=1)
    q, k, v = qkv()
    for _ in range(4):
        out = rt.attention(q, k, v)
    assert np.all(out == 1)
    assert backends.kernels[key].runs == 1
    calls = [(r.tier, r.ok) for r in rt.history() if r.event == "call"]
    assert calls == [(1, True), (3, False), (1, True), (1, True), (1, True)]
    assert rt.stats().demotions == 1


def test_a_tune_that_ends_before_submit_returns_still_promotes() -> None:
    # The worker may finish the job (and run its callback) before the submitting thread
    # marks the signature QUEUED; that must not leave it waiting for the job forever.
    backends = FakeBackends()
    rt = _runtime(backends, tier2=False, tier3_min_calls=1, tuning_workers=1)
    queue = rt._dispatcher.tuning
    submit = queue.submit
    tune = backends.tune
    job_ran = threading.Event()

    def tune_and_tell(problem: Problem) -> None:
        tune(problem)
        job_ran.set()

    def slow_submit(*args: Any, **kwargs: Any) -> bool:
        accepted = submit(*args, **kwargs)
        # The caller is descheduled until the job has run (its callback then waits for the
        # dispatcher's lock, which this caller holds): no sleep, no race.
        assert job_ran.wait(10), "the tuning job never ran"
        return accepted

    backends.tune = tune_and_tell  # type: ignore[method-assign]

    queue.submit = slow_submit  # type: ignore[method-assign]
    q, k, v = qkv()
    rt.attention(q, k, v)
    rt.attention(q, k, v)
    assert rt.wait_for_tuning(10)
    rt.attention(q, k, v)
    assert _call_tiers(rt) == [1, 1, 3]
    rt.close()


class _SlowGeneric(FakeBackends):
    def generic(self, problem: Problem) -> Kernel:
        time.sleep(0.2)  # a compile: long enough for another thread to arrive
        return super().generic(problem)


def test_calls_from_several_threads_share_one_consistent_state() -> None:
    backends = _SlowGeneric()
    rt = _runtime(backends, tier2_min_calls=0, tier3=False)
    q, k, v = qkv()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(scale: float) -> None:
        try:
            barrier.wait(5)
            for _ in range(20):
                rt.attention(q, k, v, scale=scale)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(0.1 * (i + 1),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    # Four signatures (scales) of one problem class: its generic kernel is built once.
    assert sum(backends.generic_builds.values()) == 1
    stats = rt.stats()
    assert stats.total_calls == 80 and stats.signatures == 4
    assert len([r for r in rt.history() if r.event == "call"]) == 80
    rt.close()


class _CountingLookups(FakeBackends):
    def __init__(self) -> None:
        super().__init__()
        self.lookups: Counter[str] = Counter()

    def specialized(self, problem: Problem) -> Kernel | None:
        self.lookups[problem.kernel_key(self.arch)] += 1
        return super().specialized(problem)


def test_a_full_tuning_queue_is_retried_with_backoff_not_on_every_call() -> None:
    backends = _CountingLookups()
    backends.tune_gate = threading.Event()
    rt = _runtime(backends, tier2=False, tier3_min_calls=1, tuning_queue_size=1)
    shapes = {seq: qkv(seq=seq) for seq in (16, 32, 48)}
    try:
        for seq in (16, 32):
            for _ in range(2):
                rt.attention(*shapes[seq])
            if seq == 16:
                _wait_until(lambda: rt.stats().tuning.running == 1)
        for _ in range(50):  # seq 48: refused, the queue holds seq 32
            rt.attention(*shapes[48])
        refused = "attention_fwd.fp16.b1.h2.sq48.skv48.d16.noncausal.sm_90"
        assert backends.lookups[refused] <= 8, backends.lookups
    finally:
        backends.tune_gate.set()
    assert rt.wait_for_tuning(10)
    for _ in range(80):  # it is retried within a bounded number of calls
        rt.attention(*shapes[48])
    assert rt.wait_for_tuning(10)
    rt.attention(*shapes[48])
    assert _call_tiers(rt)[-1] == 3
    assert refused in backends.tuned
    rt.close()


def test_signature_state_is_bounded_and_least_recently_used_goes_first() -> None:
    rt = _runtime(FakeBackends(), tuning_workers=0, max_signatures=2)
    small, medium, large = qkv(seq=16), qkv(seq=32), qkv(seq=48)
    for _ in range(2):
        rt.attention(*small)  # two calls: the next would run at tier 2
    rt.attention(*medium)
    rt.attention(*small)  # small is now the most recently used...
    assert _call_tiers(rt)[-1] == 2
    rt.attention(*large)  # ...so medium is forgotten, not small
    assert rt.stats().signatures == 2
    rt.attention(*small)
    assert _call_tiers(rt)[-1] == 2
    rt.attention(*medium)  # forgotten: counts again from tier 1
    assert _call_tiers(rt)[-1] == 1
    rt.close()
