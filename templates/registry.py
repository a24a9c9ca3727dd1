"""The kernel families by name: the one place that maps an op or family name to its Family."""

from __future__ import annotations

from templates.family import Family
from tessera_core.types import Problem

# The families generator.tune tunes (autotune.hotspots proposes tasks only for these).
FAMILY_NAMES = (
    "attention",
    "attention_fwd",
    "attention_bwd",
    "gemm",
    "gemm_sm90",
    "attention_decode",
)
ALL_FAMILY_NAMES = (
    "attention",
    "attention_fwd",
    "attention_bwd",
    "gemm",
    "gemm_sm90",
    "attention_sm90",
    "attention_decode",
)


def get_family(name: str) -> Family:
    """The family serving `name` (one of ALL_FAMILY_NAMES).

    Raises:
        ValueError: naming the known choices when `name` is none of them.
    """
    if name in ("attention", "attention_fwd"):
        from templates.attention.family import FAMILY as attention

        return attention
    if name == "attention_bwd":
        from templates.attention_bwd.family import FAMILY as attention_bwd

        return attention_bwd
    if name == "attention_decode":
        from templates.attention_decode.family import FAMILY as attention_decode

        return attention_decode
    if name == "gemm":
        from templates.gemm.family import FAMILY as gemm

        return gemm
    if name == "gemm_sm90":
        from templates.gemm_sm90.family import FAMILY as gemm_sm90

        return gemm_sm90
    if name == "attention_sm90":
        from templates.attention_sm90.family import FAMILY as attention_sm90

        return attention_sm90
    raise ValueError(
        f"unknown kernel family {name!r}; expected one of {', '.join(ALL_FAMILY_NAMES)}"
    )


def family_for(problem: Problem, arch: str) -> Family:
    """The family that serves `problem` on `arch`: the Hopper gemm (TMA + wgmma) for gemm on
    sm_90a when TMA can read its operands (N and K multiples of 8), else the op's family.

    Not yet used by the runtime, the tuner or the emulator's entry points: they pick families
    with get_family(problem.op), and a generic kernel serves every problem of its class
    (problem.generic_key), aligned or not; see templates/gemm_sm90/space.py.
    """
    if problem.op == "gemm" and arch == "sm_90a":
        from templates.gemm_sm90.space import serves

        if serves(problem):
            return get_family("gemm_sm90")
    return get_family(problem.op)
