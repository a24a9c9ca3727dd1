"""The kernel families by name: the one place that maps an op or family name to its Family."""

from __future__ import annotations

from templates.family import Family

# The families generator.tune tunes (autotune.hotspots proposes tasks only for these).
FAMILY_NAMES = ("attention", "attention_fwd", "gemm")
# attention_bwd renders, compiles and runs on the emulator, but has no tuning harness yet: it
# joins FAMILY_NAMES when generator.tune can measure it.
ALL_FAMILY_NAMES = ("attention", "attention_fwd", "attention_bwd", "gemm")


def get_family(name: str) -> Family:
    """The family serving `name` ("attention", "attention_fwd", "attention_bwd" or "gemm").

    Raises:
        ValueError: naming the known choices when `name` is none of them.
    """
    if name in ("attention", "attention_fwd"):
        from templates.attention.family import FAMILY as attention

        return attention
    if name == "attention_bwd":
        from templates.attention_bwd.family import FAMILY as attention_bwd

        return attention_bwd
    if name == "gemm":
        from templates.gemm.family import FAMILY as gemm

        return gemm
    raise ValueError(
        f"unknown kernel family {name!r}; expected one of {', '.join(ALL_FAMILY_NAMES)}"
    )
