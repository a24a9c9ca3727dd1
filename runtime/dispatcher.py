"""The tier dispatcher: per-signature call counts, promotion and demotion, execution and tracing."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from runtime.config import RuntimeConfig
from runtime.signature import Signature, SignatureKey
from runtime.stats import RuntimeStats, TierTimes
from runtime.tiers import OPS, Backends, Kernel, Tier
from runtime.trace import Tracer
from runtime.tuning_queue import TuningQueue
from templates.registry import select
from tessera_core.config import process_rank
from tessera_core.errors import TesseraError
from tessera_core.types import Problem, TileConfig

log = logging.getLogger("tessera.runtime")

# Tuning states of a signature's specialized kernel.
NOT_TUNED, QUEUED, TUNED, FAILED = "not_tuned", "queued", "tuned", "failed"
# A signature refused by a full tuning queue retries after at most this many more calls.
TUNE_RETRY_MAX_CALLS = 64
# How long a process waits for another one tuning the same kernel before tuning it itself:
# the tuning time limit plus this slack for compiling and storing the winner...
TUNE_WAIT_SLACK_S = 60.0
# ...or this long when tuning has no time limit.
TUNE_WAIT_UNLIMITED_S = 600.0
# The tune event's detail when another process sharing the cache tuned the kernel.
TUNED_ELSEWHERE = "loaded: tuned by another process sharing the cache"


class SignatureState:
    """What the dispatcher knows about one signature (mutated only under the dispatcher's
    lock: by calling threads, and by the tuning worker setting `tune_state` when a job ends)."""

    __slots__ = (
        "calls",
        "generic_tried",
        "kernel",
        "problem",
        "selection_traced",
        "settled",
        "signature",
        "tier",
        "total_ms",
        "tune_retry_at",
        "tune_state",
    )

    def __init__(self, signature: Signature) -> None:
        self.signature = signature
        self.problem: Problem = signature.problem()
        self.calls = 0
        self.total_ms = 0.0
        self.tier = Tier.REFERENCE
        self.kernel: Kernel | None = None  # None: tier 1 (the reference)
        self.generic_tried = False
        self.tune_state = NOT_TUNED
        self.tune_retry_at = 0  # call count before which a refused tune is not retried
        self.settled = False  # nothing left to promote to: skip the checks
        self.selection_traced = False  # a refused arch-specific family is traced once


class Dispatcher:
    """Chooses a tier per call, runs it, records it; all device work goes through `backends`.

    Thread-safe: the bookkeeping (states, counts, loaded kernels, promotion) runs under one
    lock, shared with the tuning worker's completion callback; kernels run outside it.

    `clock_ns` measures each kernel run (a monotonic clock in nanoseconds); the recorded
    wall times, and so promotion by cumulative time, come from it. Tests inject a fake one.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        backends: Backends,
        *,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.config = config
        self.backends = backends
        self._clock_ns = clock_ns
        self.tracer = Tracer(
            buffer_records=config.trace_buffer_records,
            path=config.trace_path,
            flush_records=config.trace_flush_records,
            rank=process_rank(),
        )
        self.tuning = TuningQueue(
            workers=config.tuning_workers, max_pending=config.tuning_queue_size
        )
        self._states: OrderedDict[SignatureKey, SignatureState] = OrderedDict()  # LRU order
        # Tier 1 per (op, gemm layout); the NN ones up front, the others when first called.
        self._references = {(op, "nn"): backends.reference(op) for op in OPS}
        self._generic: dict[str, Kernel | None] = {}  # generic key -> kernel (None: failed)
        self._forced: dict[tuple[str, str], Kernel] = {}
        self._loaded: OrderedDict[str, Kernel] = OrderedDict()  # specialized, LRU order
        self._times = {tier: TierTimes() for tier in Tier}
        self._failed_calls = 0
        self._promotions = 0
        self._demotions = 0
        self._lock = threading.Lock()

    # -- the call path -------------------------------------------------------------------

    def call(
        self,
        key: SignatureKey,
        inputs: tuple[Any, ...],
        forced: TileConfig | None = None,
    ) -> tuple[Any, Any]:
        """Run one validated call at its signature's tier; returns (output, lse or None)."""
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = SignatureState(Signature.from_key(key))
                while len(self._states) > self.config.max_signatures:
                    self._states.popitem(last=False)
            else:
                self._states.move_to_end(key)
            if forced is not None:
                kernel: Kernel = self._forced_kernel(state.problem, forced)
            else:
                if not state.settled:
                    self._advance(state)
                kernel = state.kernel or self._reference(key[0], state.signature.layout)
                if kernel.tier is Tier.SPECIALIZED:
                    self._loaded.move_to_end(kernel.kernel_key)  # type: ignore[arg-type]
        causal, scale, variant = key[3], key[4], key[5]
        start_s = time.time()
        start_ns = self._clock_ns()
        try:
            result = kernel.run(inputs, causal=causal, scale=scale, variant=variant)
        except Exception as exc:
            wall_ms = (self._clock_ns() - start_ns) * 1e-6
            with self._lock:
                self._failed_calls += 1
                self.tracer.append(
                    start_s,
                    "call",
                    state.signature,
                    kernel.tier,
                    wall_ms,
                    kernel.kernel_key,
                    kernel.config,
                    False,
                    f"{type(exc).__name__}: {exc}",
                )
                if forced is not None or kernel.tier is Tier.REFERENCE:
                    raise
                if not self.config.tier1_fallback:
                    raise
                if state.kernel is kernel:  # else another thread demoted it already
                    self._demote(state, kernel, exc)
            return self.call(key, inputs)
        wall_ms = (self._clock_ns() - start_ns) * 1e-6
        with self._lock:
            state.calls += 1
            state.total_ms += wall_ms
            self._times[kernel.tier].add(wall_ms)
            self.tracer.append(
                start_s,
                "call",
                state.signature,
                kernel.tier,
                wall_ms,
                kernel.kernel_key,
                kernel.config,
            )
        return result

    def _reference(self, op: str, layout: str) -> Kernel:
        kernel = self._references.get((op, layout))
        if kernel is None:
            kernel = self._references[op, layout] = self.backends.reference(op, layout)
        return kernel

    # -- promotion -----------------------------------------------------------------------

    def _advance(self, state: SignatureState) -> None:
        """Promote `state` as far as its counts, the switches and the cache allow."""
        if state.problem.op not in self.backends.compiled_ops:
            state.settled = True  # no template family: tier 1 is all there is
            return
        cfg = self.config
        compiled = self.backends.executes_compiled
        if not state.selection_traced:
            state.selection_traced = True
            self._trace_fallback(state)
        if (
            cfg.tier2
            and not state.generic_tried
            and state.tier < Tier.GENERIC
            and state.calls >= cfg.tier2_min_calls
            and state.total_ms >= cfg.tier2_min_time_ms
        ):
            state.generic_tried = True
            kernel = self._generic_kernel(state.problem)
            if kernel is not None and compiled:
                self._promote(state, kernel, f"calls={state.calls} total_ms={state.total_ms:.3f}")
        if (
            cfg.tier3
            and state.tune_state not in (QUEUED, FAILED)  # FAILED is final: never retried
            and state.calls >= cfg.tier3_min_calls
            and state.calls >= state.tune_retry_at
            and state.total_ms >= cfg.tier3_min_time_ms
        ):
            self._advance_specialized(state, compiled)
        state.settled = self._settled(state)

    def _advance_specialized(self, state: SignatureState, compiled: bool) -> None:
        kernel = self._specialized_kernel(state.problem)
        if kernel is not None:
            state.tune_state = TUNED
            if compiled:
                self._promote(state, kernel, "specialized kernel in cache")
            return
        if state.tune_state == NOT_TUNED:
            self._queue_tuning(state)
        elif state.tune_state == TUNED:  # the job ended, yet nothing usable is cached
            state.tune_state = FAILED
            self._trace_event(state, "tune", ok=False, detail="tuned, but no usable cache entry")

    def _settled(self, state: SignatureState) -> bool:
        cfg = self.config
        if state.tier is Tier.SPECIALIZED:
            return True
        tier2_done = not cfg.tier2 or state.generic_tried
        tier3_done = (
            not cfg.tier3
            or state.tune_state == FAILED
            or (state.tune_state == TUNED and not self.backends.executes_compiled)
        )
        return tier2_done and tier3_done

    def _promote(self, state: SignatureState, kernel: Kernel, reason: str) -> None:
        if kernel.tier <= state.tier:
            return
        state.tier, state.kernel = kernel.tier, kernel
        self._promotions += 1
        self._trace_event(state, "promote", kernel=kernel, detail=reason)

    def _demote(self, state: SignatureState, kernel: Kernel, exc: BaseException) -> None:
        """A compiled kernel failed: serve this signature one tier lower from now on."""
        log.warning(
            "%s at tier %d failed (%s: %s); falling back",
            state.signature.label(),
            kernel.tier,
            type(exc).__name__,
            exc,
        )
        if kernel.tier is Tier.SPECIALIZED:
            state.tune_state = FAILED
            state.kernel = self._below_specialized(state)
        else:
            self._generic[self._generic_key(state.problem)] = None
            state.kernel = None
        state.tier = state.kernel.tier if state.kernel is not None else Tier.REFERENCE
        state.settled = self._settled(state)
        self._demotions += 1
        self._trace_event(state, "demote", ok=False, detail=f"{type(exc).__name__}: {exc}")

    def _below_specialized(self, state: SignatureState) -> Kernel | None:
        """What a signature leaving tier 3 runs: its generic kernel if built and executable,
        else None (tier 1)."""
        generic = self._generic.get(self._generic_key(state.problem))
        return generic if generic is not None and self.backends.executes_compiled else None

    # -- kernels -------------------------------------------------------------------------

    # Keys name the family serving the problem on the backend's arch (templates.registry): on
    # sm_90a an aligned gemm is gemm_sm90's, an unaligned one the mma.sync gemm's.
    def _generic_key(self, problem: Problem) -> str:
        return select(problem, self.backends.arch).generic_key(problem)

    def _kernel_key(self, problem: Problem) -> str:
        return select(problem, self.backends.arch).kernel_key(problem)

    def _trace_fallback(self, state: SignatureState) -> None:
        """A 'select' event when an arch-specific family refused the problem (say gemm_sm90
        for N % 8 != 0 on sm_90a), naming the family and its reason; nothing otherwise."""
        if state.problem.op not in self.backends.compiled_ops:
            return
        selection = select(state.problem, self.backends.arch)
        if selection.fallback_reason is not None:
            self._trace_event(
                state,
                "select",
                ok=True,
                detail=f"{selection.family.name} serves it: {selection.fallback_reason}",
            )

    def _generic_kernel(self, problem: Problem) -> Kernel | None:
        """The problem class's generic kernel, built once; None if building it failed."""
        key = self._generic_key(problem)
        if key not in self._generic:
            try:
                self._generic[key] = self.backends.generic(problem)
            except TesseraError as exc:
                log.warning("generic kernel %s unavailable: %s", key, exc)
                self._generic[key] = None
        return self._generic[key]

    def _specialized_kernel(self, problem: Problem) -> Kernel | None:
        key = self._kernel_key(problem)
        kernel = self._loaded.get(key)
        if kernel is not None:
            return kernel
        try:
            kernel = self.backends.specialized(problem)
        except TesseraError as exc:
            log.warning("specialized kernel %s unusable: %s", key, exc)
            return None
        if kernel is None:
            return None
        self._loaded[key] = kernel
        while len(self._loaded) > self.config.max_loaded_kernels:
            evicted, _ = self._loaded.popitem(last=False)
            self._unload(evicted)
        return kernel

    def _unload(self, kernel_key: str) -> None:
        """An LRU eviction: signatures on that kernel drop to tier 2 and may reload it later."""
        for state in self._states.values():
            if state.kernel is not None and state.kernel.kernel_key == kernel_key:
                state.kernel = self._below_specialized(state)
                state.tier = state.kernel.tier if state.kernel is not None else Tier.REFERENCE
                state.settled = False
                self._demotions += 1
                self._trace_event(state, "demote", detail="evicted from the loaded-kernel LRU")

    def _forced_kernel(self, problem: Problem, config: TileConfig) -> Kernel:
        key = (self._generic_key(problem), config.key())
        kernel = self._forced.get(key)
        if kernel is None:
            kernel = self._forced[key] = self.backends.forced(problem, config)
        return kernel

    # -- background tuning ---------------------------------------------------------------

    def _queue_tuning(self, state: SignatureState) -> None:
        problem = state.problem
        key = self._kernel_key(problem)

        outcome = ["finished"]

        def job() -> None:
            outcome[0] = self._tune_once(problem, key)

        def done(_key: str, error: BaseException | None) -> None:
            # Runs on the tuning worker. Every signature of this problem (they differ by
            # scale only) learns the outcome.
            with self._lock:
                for other in self._states.values():
                    if other.problem == problem and other.tune_state == QUEUED:
                        other.tune_state = TUNED if error is None else FAILED
                        other.settled = False
                detail = outcome[0] if error is None else f"{type(error).__name__}: {error}"
                self._trace_event(state, "tune", kernel_key=key, ok=error is None, detail=detail)

        # Called under self._lock, which `done` needs too: the job cannot report its end
        # before this state is marked QUEUED, however fast it runs.
        if self.tuning.submit(key, job, done):
            state.tune_state = QUEUED
            self._trace_event(state, "tune", kernel_key=key, detail="queued")
        elif self.tuning.in_flight(key):  # another scale of the same problem queued it
            state.tune_state = QUEUED
        elif self.config.tuning_workers == 0:
            state.tune_state = FAILED  # nothing will ever tune it in this process
        else:
            # The queue is full (or closed): stay NOT_TUNED and retry later, but not on every
            # call, since each retry is a cache lookup on disk: back off, up to a bound.
            state.tune_retry_at = state.calls + max(1, min(state.calls, TUNE_RETRY_MAX_CALLS))

    def _tune_once(self, problem: Problem, kernel_key: str) -> str:
        """Tune `problem` unless a process sharing the writable cache tunes or tuned it.

        Single-flight across processes (one per GPU in a data-parallel job): the tuner holds
        the kernel's build lock in the cache (KernelCache.build_lock, the lock get_or_build
        builds under), so the others wait on it and then load its result. A waiter that
        waits past the tuning time limit tunes itself. Returns the tune event's detail.
        """
        from runtime.specialized import open_cache

        limit_s = self.config.tuning_timeout_s
        wait_s = limit_s + TUNE_WAIT_SLACK_S if limit_s else TUNE_WAIT_UNLIMITED_S
        with open_cache(self.config.cache_dirs).build_lock(kernel_key, timeout_s=wait_s) as held:
            if not held:
                log.warning("waited %.0f s for another process to tune %s", wait_s, kernel_key)
            try:
                if self.backends.specialized(problem) is not None:
                    return TUNED_ELSEWHERE
            except TesseraError as exc:  # an unusable entry: tune a fresh one
                log.warning("cached %s unusable (%s); tuning it", kernel_key, exc)
            self.backends.tune(problem)
        return "finished"

    def wait_for_tuning(self, timeout_s: float | None = None) -> bool:
        return self.tuning.wait_idle(timeout_s)

    # -- reporting -----------------------------------------------------------------------

    def _trace_event(
        self,
        state: SignatureState,
        event: str,
        *,
        kernel: Kernel | None = None,
        kernel_key: str | None = None,
        ok: bool = True,
        detail: str = "",
    ) -> None:
        self.tracer.append(
            time.time(),
            event,
            state.signature,
            int(state.tier),
            0.0,
            kernel_key if kernel is None else kernel.kernel_key,
            None if kernel is None else kernel.config,
            ok,
            detail,
        )

    def stats(self) -> RuntimeStats:
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> RuntimeStats:
        by_tier = {int(t): 0 for t in Tier}
        for state in self._states.values():
            by_tier[int(state.tier)] += 1
        return RuntimeStats(
            device=self.backends.device,
            arch=self.backends.arch,
            total_calls=sum(t.count for t in self._times.values()),
            failed_calls=self._failed_calls,
            tiers={int(tier): times.snapshot() for tier, times in self._times.items()},
            signatures=len(self._states),
            signatures_by_tier=by_tier,
            loaded_kernels=list(self._loaded),
            tuning=self.tuning.stats(),
            promotions=self._promotions,
            demotions=self._demotions,
        )

    def close(self) -> None:
        self.tuning.close()
        self.tracer.close()
