"""The kernel families by name, and the table that picks the family serving a problem on an arch."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from templates.family import Family
from tessera_core.types import Problem

# The families generator.tune tunes (autotune.hotspots proposes tasks only for these).
FAMILY_NAMES = (
    "attention",
    "attention_fwd",
    "attention_bwd",
    "gemm",
    "gemm_sm90",
    "attention_sm90",
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


@dataclass(frozen=True)
class Route:
    """On `arch`, problems of `op` go to `family` first, when its space can run them.

    The contract a routed family meets is the Family protocol itself: its space's constraints
    say which problems it refuses (alignment, dtype, head_dim), and a refused problem falls
    back to the op's own family with that reason recorded.
    """

    op: str
    arch: str
    family: str


# Arch-specific families, tried in order before the op's own (mma.sync) family. sm_90a is the
# arch-specific feature set of compute capability 9.0 (wgmma, setmaxnreg); plain sm_90 keeps
# the mma.sync families, which run forward on later GPUs.
ROUTES: tuple[Route, ...] = (
    Route(op="gemm", arch="sm_90a", family="gemm_sm90"),
    Route(op="attention", arch="sm_90a", family="attention_sm90"),
)


@dataclass(frozen=True)
class Selection:
    """The family serving one problem on one arch, and why routed families were passed over."""

    family: Family
    arch: str
    passed_over: tuple[str, ...] = ()  # "gemm_sm90: tma_alignment: N=130, ..." per refusal

    @property
    def fallback_reason(self) -> str | None:
        """One line naming each arch-specific family that refused the problem, else None."""
        return "; ".join(self.passed_over) or None

    def kernel_key(self, problem: Problem) -> str:
        """The specialized kernel's key: it names the serving family and the arch."""
        return problem.kernel_key(self.arch, family=self._key_family(problem))

    def generic_key(self, problem: Problem) -> str:
        """The generic kernel's key: one per family and problem class, so an aligned and an
        unaligned problem that go to different families never share a generic kernel."""
        return problem.generic_key(self.arch, family=self._key_family(problem))

    def _key_family(self, problem: Problem) -> str | None:
        # The op's own family keeps its key (gemm.…, attention_fwd.…); another names itself.
        return None if self.family.name == problem.family else self.family.name


def refusal(family: Family, problem: Problem, arch: str) -> str | None:
    """Why `family` cannot run `problem` on `arch` (its space's one reason, or that no
    configuration is valid), else None."""
    reason = family.space.unsupported(problem, arch)
    if reason is not None:
        return reason
    if not family.space.valid_configs(problem, arch):
        return f"no valid {family.name} configuration for {problem.shape_str()} on {arch}"
    return None


@functools.lru_cache(maxsize=4096)
def select(problem: Problem, arch: str) -> Selection:
    """The family that serves `problem` on `arch`: the first route of ROUTES for its op and
    arch whose family can run it, else the op's own family (memoized: problems are frozen)."""
    passed_over: list[str] = []
    for route in ROUTES:
        if route.op != problem.op or route.arch != arch:
            continue
        family = get_family(route.family)
        reason = refusal(family, problem, arch)
        if reason is None:
            return Selection(family=family, arch=arch, passed_over=tuple(passed_over))
        passed_over.append(f"{family.name}: {reason}")
    return Selection(family=get_family(problem.op), arch=arch, passed_over=tuple(passed_over))


def family_for(problem: Problem, arch: str) -> Family:
    """The family that serves `problem` on `arch` (see select): on sm_90a the Hopper gemm for
    gemms TMA can read (N and K multiples of 8) and the Hopper attention for plain [batch,
    heads, seq, head_dim] attention at head_dim 64 or 128 (e4m3: 128), else the op's mma.sync
    family."""
    return select(problem, arch).family


def kernel_key(problem: Problem, arch: str) -> str:
    """The specialized kernel key of `problem` on `arch`, naming the family that serves it."""
    return select(problem, arch).kernel_key(problem)


def generic_key(problem: Problem, arch: str) -> str:
    """The generic kernel key of `problem`'s class on `arch`, naming the family serving it."""
    return select(problem, arch).generic_key(problem)
