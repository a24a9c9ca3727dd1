"""A tile search space as data: named parameters with their choices, and named constraints."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from core.types import Problem, TileConfig

# A rule returns None when the config satisfies it, else a reason naming field, value and rule.
Rule = Callable[[TileConfig, Problem, str], "str | None"]


@dataclass(frozen=True)
class Param:
    """One tunable and the values the search may give it."""

    name: str
    choices: tuple[int, ...]


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
        if sorted(names) != sorted(TileConfig.FIELDS):
            raise ValueError(
                f"space {self.family}: params {names} must be exactly {list(TileConfig.FIELDS)}"
            )

    def choices(self, name: str) -> tuple[int, ...]:
        for param in self.params:
            if param.name == name:
                return param.choices
        raise KeyError(name)

    def violations(self, config: TileConfig, problem: Problem, arch: str) -> list[str]:
        """Every reason `config` is invalid for `problem` on `arch` (empty when valid)."""
        reasons = []
        for param in self.params:
            value = getattr(config, param.name)
            if value not in param.choices:
                reasons.append(f"{param.name}={value} is not one of {list(param.choices)}")
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
                yield TileConfig(**kwargs)
            except ValueError:
                continue

    def valid_configs(self, problem: Problem, arch: str) -> list[TileConfig]:
        return [c for c in self.all_configs() if self.is_valid(c, problem, arch)]

    def size(self) -> int:
        total = 1
        for param in self.params:
            total *= len(param.choices)
        return total
