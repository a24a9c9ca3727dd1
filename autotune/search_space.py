"""What a strategy searches: named parameters with ordered choices and a validity rule.

Besides enumerating the valid set, a space places its points for a surrogate model
(`features`) and says which points are aligned (`aligned`): on a GPU a block of 32 or 64
threads fills whole warps and aligned transactions while 48 does not, and a tile of 3 wastes
vector lanes that 2 and 4 use. The recorded GPU spaces agree: every configuration within 15%
of the optimum on the three convolution GPUs has every such parameter at a power of two
(autotune.strategy starts its search there; docs/search-candidates.md).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Values = tuple[Any, ...]


@dataclass(frozen=True)
class SearchSpace:
    """Named parameters with ordered choices and a validity rule: whatever a strategy searches."""

    params: tuple[tuple[str, tuple[Any, ...]], ...]
    violations: Callable[[Mapping[str, Any]], list[str]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)

    def size(self) -> int:
        return int(np.prod([len(choices) for _, choices in self.params]))

    def as_dict(self, values: Values) -> dict[str, Any]:
        return dict(zip(self.names, values, strict=True))

    def points(self) -> Iterator[Values]:
        """Every point of the cartesian product, valid or not, in a stable order."""
        return itertools.product(*(choices for _, choices in self.params))

    @functools.cached_property
    def valid_points(self) -> list[Values]:
        """Every valid point in a stable (cartesian) order (computed once)."""
        return [values for values in self.points() if not self.violations(self.as_dict(values))]

    def features(
        self, points: Sequence[Values], *, log_numbers: bool = False, alignment: bool = False
    ) -> np.ndarray:
        """Each point as positions among the ordered choices, in [0, 1]; constants dropped.

        log_numbers: a parameter whose choices are all positive numbers is placed by the
        log of its value instead of its index (16, 32, 48, 64: 48 nearer to 64 than to 16).
        alignment: an integer parameter whose choices mix powers of two and other numbers
        gets a second column, 1 for a power of two: on a GPU a block of 32 or 64 threads
        fills whole warps and aligned transactions while 48 does not, a cliff that no
        ordering of 32 < 48 < 64 expresses.
        """
        columns = []
        for j, (_, choices) in enumerate(self.params):
            if len(choices) < 2:
                continue
            numeric = all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 for c in choices
            )
            if log_numbers and numeric:
                low, high = np.log(min(choices)), np.log(max(choices))
                columns.append([(np.log(p[j]) - low) / (high - low) for p in points])
            else:
                index = {choice: i for i, choice in enumerate(choices)}
                columns.append([index[p[j]] / (len(choices) - 1) for p in points])
            if alignment and j in self._mixed_alignment:
                columns.append([float(_power_of_two(int(p[j]))) for p in points])
        return np.asarray(columns, dtype=np.float64).T.reshape(len(points), len(columns))

    @functools.cached_property
    def _mixed_alignment(self) -> frozenset[int]:
        """Positions of the integer parameters whose choices mix powers of two and others."""
        return frozenset(
            j
            for j, (_, choices) in enumerate(self.params)
            if all(_positive_integer(c) for c in choices)
            and len({_power_of_two(int(c)) for c in choices}) > 1
        )

    def aligned(self, points: Sequence[Values]) -> np.ndarray:
        """Per point, whether every parameter that mixes powers of two and other integers is
        at a power of two (all True when no parameter mixes them)."""
        mixed = sorted(self._mixed_alignment)
        return np.asarray(
            [all(_power_of_two(int(p[j])) for j in mixed) for p in points], dtype=bool
        ).reshape(len(points))


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _positive_integer(c: Any) -> bool:
    numeric = isinstance(c, (int, float)) and not isinstance(c, bool)
    return numeric and c > 0 and float(c).is_integer()
