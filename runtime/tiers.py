"""The three execution tiers and the backend interface the dispatcher drives (real or fake)."""

from __future__ import annotations

import enum
from typing import Any, Protocol

from runtime.signature import Variant
from tessera_core.types import Problem, TileConfig

# Every op the runtime dispatches; each has a tier-1 reference. Which ones also have compiled
# tiers is each backend's `compiled_ops`.
OPS: tuple[str, ...] = ("attention", "attention_bwd", "gemm", "attention_decode")


class Tier(enum.IntEnum):
    """1: NumPy reference; 2: generic compiled kernel; 3: shape-specialized, tuned kernel."""

    REFERENCE = 1
    GENERIC = 2
    SPECIALIZED = 3


class Kernel(Protocol):
    """Something that executes one problem class: a reference, a generic or a specialized kernel."""

    tier: Tier
    kernel_key: str | None
    config: TileConfig | None

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Variant = ()
    ) -> tuple[Any, Any]:
        """(output, lse) for attention inputs (q, k, v[, alibi_slopes]) and its `variant`;
        ((dq, dk, dv), None) for attention_bwd inputs (q, k, v, o, lse, do); (output, None) for
        gemm inputs (a, b)."""
        ...


class Backends(Protocol):
    """What executes each tier on one device; the dispatcher holds no device knowledge itself.

    `generic` and `specialized` may raise any TesseraError (a compile failure, a broken cache
    entry): the dispatcher then keeps the signature at its tier. `tune` runs on a background
    worker and fills the cache; an exception there is logged as a failed job.
    """

    device: str  # "cuda" | "emulator" | "cpu"
    arch: str
    executes_compiled: bool  # False: kernels are built (and tuned) but calls stay at tier 1
    # Ops with a template family this backend builds and runs at tiers 2 and 3; the others
    # run their reference only: the dispatcher never builds, tunes or loads a kernel for them.
    compiled_ops: frozenset[str]

    def reference(self, op: str, layout: str = "nn") -> Kernel:
        """Tier 1 of `op` (for gemm, of operands stored in `layout`: nn, nt, tn or tt)."""
        ...

    def generic(self, problem: Problem) -> Kernel: ...

    def forced(self, problem: Problem, config: TileConfig) -> Kernel: ...

    def specialized(self, problem: Problem) -> Kernel | None:
        """The tuned kernel of exactly this problem from the cache, or None when none is cached."""
        ...

    def tune(self, problem: Problem) -> None: ...
