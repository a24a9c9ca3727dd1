"""A tile search space as data: named parameters with their choices, and named constraints."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tessera_core.errors import InvalidConfigError
from tessera_core.hardware import arch_spec
from tessera_core.types import Problem, TileConfig

# A rule returns None when the config satisfies it, else a reason naming field, value and rule.
Rule = Callable[[TileConfig, Problem, str], "str | None"]


@dataclass(frozen=True)
class Param:
    """One tunable and the values the search may give it.

    `default` is an option's value in a config that leaves it out (None: it must be set).
    """

    name: str
    choices: tuple[int, ...]
    default: int | None = None


@dataclass(frozen=True)
class Constraint:
    """A named validity rule over (config, problem, arch)."""

    name: str
    rule: Rule

    def check(self, config: TileConfig, problem: Problem, arch: str) -> str | None:
        return self.rule(config, problem, arch)


@dataclass(frozen=True)
class Space:
    """A kernel family's tile space: the product of its params, filtered by constraints."""

    family: str
    params: tuple[Param, ...]
    constraints: tuple[Constraint, ...]

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        missing = [name for name in TileConfig.FIELDS if name not in names]
        if missing or len(set(names)) != len(names):
            raise ValueError(
                f"space {self.family}: params {names} must name each of "
                f"{list(TileConfig.FIELDS)} once, plus the family's options"
            )

    @property
    def option_names(self) -> tuple[str, ...]:
        """The family's own tunables: params beyond TileConfig's five tile fields."""
        return tuple(p.name for p in self.params if p.name not in TileConfig.FIELDS)

    def choices(self, name: str) -> tuple[int, ...]:
        for param in self.params:
            if param.name == name:
                return param.choices
        raise KeyError(name)

    def violations(self, config: TileConfig, problem: Problem, arch: str) -> list[str]:
        """Every reason `config` is invalid for `problem` on `arch` (empty when valid)."""
        reasons = []
        values = config.to_dict()
        for param in self.params:
            value = values.pop(param.name, param.default)
            if value is None:
                reasons.append(f"{param.name} is not set; expected one of {list(param.choices)}")
            elif value not in param.choices:
                reasons.append(f"{param.name}={value} is not one of {list(param.choices)}")
        for name in values:  # options of another family
            reasons.append(f"{name} is not a tunable of {self.family}")
        for constraint in self.constraints:
            reason = constraint.check(config, problem, arch)
            if reason is not None:
                reasons.append(f"{constraint.name}: {reason}")
        return reasons

    def is_valid(self, config: TileConfig, problem: Problem, arch: str) -> bool:
        return not self.violations(config, problem, arch)

    def all_configs(self) -> Iterator[TileConfig]:
        """Every point of the cartesian product, valid or not, in a stable order."""
        names = [p.name for p in self.params]
        for values in itertools.product(*(p.choices for p in self.params)):
            kwargs: dict[str, Any] = dict(zip(names, values, strict=True))
            try:
                yield TileConfig.from_dict(kwargs)
            except ValueError:
                continue

    def valid_configs(self, problem: Problem, arch: str) -> list[TileConfig]:
        return [c for c in self.all_configs() if self.is_valid(c, problem, arch)]

    def first_valid(
        self, candidates: Sequence[TileConfig], problem: Problem, arch: str
    ) -> TileConfig:
        """The first of `candidates` valid for `problem` on `arch`, in their order of preference.

        Raises:
            InvalidConfigError: none is valid; names the last candidate's violations.
        """
        for config in candidates:
            if self.is_valid(config, problem, arch):
                return config
        reasons = self.violations(candidates[-1], problem, arch)
        raise InvalidConfigError(f"no valid {self.family} tile for {problem} on {arch}: {reasons}")

    def unsupported(self, problem: Problem, arch: str) -> str | None:
        """The one reason no configuration can run `problem` on `arch`, if there is one.

        That is a constraint rejecting every configuration of the space with the same reason,
        one about the problem (head_dim=72) rather than a tile; None when there is none.
        """
        configs = list(self.all_configs())
        for constraint in self.constraints:
            reasons = {constraint.check(config, problem, arch) for config in configs}
            if len(reasons) == 1 and None not in reasons:
                return f"{constraint.name}: {reasons.pop()}"
        return None

    def size(self) -> int:
        total = 1
        for param in self.params:
            total *= len(param.choices)
        return total


# Rules every family shares: the arch's per-block limits. Families add them to their spaces.
MAX_GRID_Y_Z = 65535  # gridDim.y and gridDim.z limit on every supported arch


def threads_within_arch(config: TileConfig, problem: Problem, arch: str) -> str | None:
    limit = arch_spec(arch).max_threads_per_block
    if config.num_threads > limit:
        return f"num_warps={config.num_warps} gives {config.num_threads} threads > {limit}"
    return None


def smem_within_arch(smem_bytes: Callable[[Problem, TileConfig], int]) -> Rule:
    """A rule capping `smem_bytes(problem, config)` at the arch's per-block opt-in limit."""

    def rule(config: TileConfig, problem: Problem, arch: str) -> str | None:
        need = smem_bytes(problem, config)
        limit = arch_spec(arch).max_smem_per_block_bytes
        if need > limit:
            return f"smem_bytes={need} exceeds the {arch} per-block opt-in limit of {limit} bytes"
        return None

    return rule


def grid_within_arch(grid: Callable[[Problem, TileConfig], tuple[int, int, int]]) -> Rule:
    """A rule keeping the launch grid's y and z extents within the hardware limit."""

    def rule(config: TileConfig, problem: Problem, arch: str) -> str | None:
        _, y, z = grid(problem, config)
        if max(y, z) > MAX_GRID_Y_Z:
            return f"grid y={y}, z={z} exceeds {MAX_GRID_Y_Z}; split the problem into launches"
        return None

    return rule
