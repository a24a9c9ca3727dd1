"""The cost model's prediction for a (problem, config) and the interval its errors justify."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.cost_model import CostEstimate, estimate
from templates.registry import family_for, kernel_key
from tessera_core.errors import TesseraError
from tessera_core.types import Problem, TileConfig

# cost_model's own claim: it ranks configurations and predicts times "to a small factor".
# Without measurements to calibrate against, the report states this factor as the interval.
DEFAULT_FACTOR = 2.0
# Measured/model pairs needed before the interval is taken from them instead.
MIN_CALIBRATION_PAIRS = 5
COVERAGE = 0.9  # the calibrated interval covers this fraction of the calibration pairs

# resources_fn(problem, config, arch) -> ptxas resources (registers, static_smem_bytes,
# spill_store_bytes, spill_load_bytes), as generator.compile reports them.
ResourcesFn = Callable[[Problem, TileConfig, str], Any]


@dataclass(frozen=True)
class Resources:
    """The four ptxas figures the cost model reads (a stored entry's `resources` dict)."""

    registers: int
    static_smem_bytes: int
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resources:
        return cls(
            registers=int(data["registers"]),
            static_smem_bytes=int(data.get("static_smem_bytes", 0)),
            spill_store_bytes=int(data.get("spill_store_bytes", 0)),
            spill_load_bytes=int(data.get("spill_load_bytes", 0)),
        )


def compiled_resources(problem: Problem, config: TileConfig, arch: str) -> Any:
    """Render and NVRTC-compile `config` for `problem` (the compile cache answers repeats)."""
    from generator.compile import compile_kernel
    from generator.render import render

    rendered = render(family_for(problem, arch), problem, config, arch=arch)
    return compile_kernel(rendered, arch=arch).resources


@dataclass(frozen=True)
class Interval:
    """A prediction interval as a multiplicative factor around the model's time."""

    factor: float
    basis: str  # how the factor was chosen, printed under the table

    def around(self, time_ms: float) -> tuple[float, float]:
        return time_ms / self.factor, time_ms * self.factor


def calibrate(pairs: Sequence[tuple[float, float]]) -> Interval:
    """The factor that covers COVERAGE of (model_ms, measured_ms) pairs, else DEFAULT_FACTOR.

    The factor is exp of the COVERAGE quantile of |log(measured / model)|: of the pairs the
    report has, that share lay within it of the model.
    """
    usable = [(m, t) for m, t in pairs if m > 0 and t > 0]
    if len(usable) < MIN_CALIBRATION_PAIRS:
        return Interval(
            DEFAULT_FACTOR,
            f"x/÷{DEFAULT_FACTOR:g}: the cost model's stated accuracy (fewer than "
            f"{MIN_CALIBRATION_PAIRS} measurements to calibrate it; {len(usable)} available)",
        )
    errors = np.abs(np.log([t / m for m, t in usable]))
    factor = float(math.exp(np.quantile(errors, COVERAGE)))
    factor = max(factor, 1.0 + 1e-9)
    return Interval(
        factor,
        f"x/÷{factor:.3g}: covers {COVERAGE:.0%} of the {len(usable)} measured/model pairs "
        "in this report",
    )


class ModelOracle:
    """Cost-model times for (problem, config, arch), memoized; resources compiled on demand.

    `resources_fn` replaces compilation (tests inject fixed resources); None means NVRTC
    through the compile cache. `compile=False` never compiles: a configuration without
    stored resources then has no model time.
    """

    def __init__(self, *, resources_fn: ResourcesFn | None = None, compile: bool = True) -> None:
        self._resources_fn = resources_fn or (compiled_resources if compile else None)
        self._memo: dict[tuple[str, str, str], CostEstimate | None] = {}
        self.failures: dict[str, str] = {}  # kernel_key/config -> why no model time

    def estimate(
        self,
        problem: Problem,
        config: TileConfig,
        arch: str,
        *,
        resources: dict[str, Any] | None = None,
    ) -> CostEstimate | None:
        """The model's estimate, or None (and a reason in `failures`) when it has none."""
        memo_key = (kernel_key(problem, arch), config.key(), arch)
        if memo_key in self._memo:
            return self._memo[memo_key]
        result: CostEstimate | None = None
        try:
            if resources is not None:
                usage: Any = Resources.from_dict(resources)
            elif self._resources_fn is not None:
                usage = self._resources_fn(problem, config, arch)
            else:
                usage = None
                self.failures[f"{memo_key[0]} {config}"] = "no stored resources (--no-compile)"
            if usage is not None:
                family = family_for(problem, arch)
                result = estimate(
                    problem,
                    config,
                    usage,
                    dynamic_smem_bytes=family.smem_bytes(problem, config),
                    arch=arch,
                    family=family.name,
                )
        except (TesseraError, ValueError, KeyError) as exc:
            self.failures[f"{memo_key[0]} {config}"] = f"{type(exc).__name__}: {exc}"
            result = None
        self._memo[memo_key] = result
        return result

    def time_ms(self, problem: Problem, config: TileConfig, arch: str) -> float | None:
        cost = self.estimate(problem, config, arch)
        return None if cost is None else cost.time_ms


def default_config(problem: Problem, arch: str) -> TileConfig:
    """The configuration the generic (tier 2) kernel runs: the family's heuristic default."""
    return family_for(problem, arch).default_config(problem, arch)
