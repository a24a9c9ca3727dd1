"""Injected tier backends for dispatcher tests: no compiler, no emulator, no GPU."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import numpy as np

from runtime.tiers import Kernel, Tier
from templates.registry import generic_key, kernel_key
from tessera_core.errors import CompileError, EmulatorError
from tessera_core.types import Problem, TileConfig

CONFIG = TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2)


class FakeClock:
    """A monotonic nanosecond clock that only moves when told to (inject as `clock_ns`)."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns

    def advance_ms(self, ms: float) -> None:
        self.now_ns += round(ms * 1e6)


class FakeKernel:
    """Returns an array filled with its tier number, so a test sees which tier ran.

    With a `clock`, each run advances it by `run_ms`: the run "takes" exactly that long.
    """

    def __init__(
        self,
        tier: Tier,
        *,
        kernel_key: str | None = None,
        config: TileConfig | None = None,
        clock: FakeClock | None = None,
        run_ms: float = 0.0,
    ) -> None:
        self.tier = tier
        self.kernel_key = kernel_key
        self.config = config
        self.fail = False
        self.runs = 0
        self.clock = clock
        self.run_ms = run_ms

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Any = ()
    ) -> tuple[Any, Any]:
        self.runs += 1
        if self.clock is not None:
            self.clock.advance_ms(self.run_ms)
        if self.fail:
            raise EmulatorError(f"injected fault in {self.kernel_key}")
        if len(inputs) == 6:  # attention_bwd (q, k, v, o, lse, do) -> (dq, dk, dv)
            return tuple(
                np.full(x.shape, float(self.tier), dtype=x.dtype) for x in inputs[:3]
            ), None
        first = inputs[0]
        return np.full(first.shape, float(self.tier), dtype=first.dtype), None


class FakeBackends:
    """Tier backends whose cache is a set of kernel keys and whose tuner can block or fail.

    Keys come from templates.registry, as the real backends' do (the family serving the
    problem on `arch` names them)."""

    def __init__(
        self,
        *,
        device: str = "emulator",
        executes_compiled: bool = True,
        clock: FakeClock | None = None,
        run_ms: float = 0.0,
        compiled_ops: frozenset[str] = frozenset({"attention", "attention_bwd", "gemm"}),
    ) -> None:
        self.clock = clock  # with a clock, every kernel run advances it by run_ms
        self.run_ms = run_ms
        self.device = device
        self.arch = "sm_90"
        self.executes_compiled = executes_compiled
        self.compiled_ops = compiled_ops
        self.cached: set[str] = set()
        self.generic_builds: Counter[str] = Counter()
        self.generic_fails = False
        self.tune_fails = False
        self.tune_gate: threading.Event | None = None  # set: the tuner waits for it
        self.tune_threads: list[int] = []
        self.tuned: list[str] = []
        self.kernels: dict[str, FakeKernel] = {}

    def reference(self, op: str, layout: str = "nn") -> Kernel:
        return FakeKernel(Tier.REFERENCE, clock=self.clock, run_ms=self.run_ms)

    def generic(self, problem: Problem) -> Kernel:
        key = generic_key(problem, self.arch)
        self.generic_builds[key] += 1
        if self.generic_fails:
            raise CompileError("injected compile failure", log="error: injected")
        kernel = self.kernels[key] = FakeKernel(
            Tier.GENERIC, kernel_key=key, config=CONFIG, clock=self.clock, run_ms=self.run_ms
        )
        return kernel

    def forced(self, problem: Problem, config: TileConfig) -> Kernel:
        return FakeKernel(Tier.GENERIC, kernel_key=generic_key(problem, self.arch), config=config)

    def specialized(self, problem: Problem) -> Kernel | None:
        key = kernel_key(problem, self.arch)
        if key not in self.cached:
            return None
        kernel = self.kernels[key] = FakeKernel(
            Tier.SPECIALIZED, kernel_key=key, config=CONFIG, clock=self.clock, run_ms=self.run_ms
        )
        return kernel

    def tune(self, problem: Problem) -> None:
        self.tune_threads.append(threading.get_ident())
        if self.tune_gate is not None:
            self.tune_gate.wait(30)
        key = kernel_key(problem, self.arch)
        self.tuned.append(key)
        if self.tune_fails:
            raise CompileError("injected tuning failure", log="error: injected")
        self.cached.add(key)


def qkv(seq: int = 16, head_dim: int = 16, dtype: Any = np.float16) -> tuple[np.ndarray, ...]:
    """Small random q, k, v [1, 2, seq, head_dim]."""
    rng = np.random.default_rng(seq * 1000 + head_dim)
    return tuple(rng.standard_normal((1, 2, seq, head_dim)).astype(dtype) for _ in range(3))
