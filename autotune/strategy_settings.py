"""The search strategy's tunables, and the named candidates replay compares.

Every candidate measured for the default is kept selectable by name (PRESETS, the
`--strategies` of `python -m autotune.replay`); docs/search-candidates.md tables each one on
the shared recorded spaces and on held-out spaces, and says why the default is what it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

INITIAL_DESIGNS = ("maximin", "random", "mixed", "lhs")
ACQUISITIONS = ("ei", "multi", "ts", "hedge")
SURROGATES = ("gp", "forest", "both")
Model = Literal["gp", "tpe"]
MODELS: tuple[Model, ...] = ("gp", "tpe")


@dataclass(frozen=True)
class StrategySettings:
    """The tunables of the strategy itself, chosen with replay (autotune.replay)."""

    model: Model = "gp"
    initial_points: int = 8  # gp: spread-out evaluations before the model proposes
    initial_design: str = (
        "maximin"  # gp: one of INITIAL_DESIGNS (autotune.strategy.Searcher._design_row)
    )
    # gp: how many of the initial points come from the aligned configurations (every integer
    # parameter that mixes powers of two and other sizes at a power of two); the rest of the
    # design is maximin over every valid point, so the model also sees unaligned sizes.
    aligned_start: int = 8
    gp_fit_steps: int = 15  # gp: Adam steps on the hyperparameters per new observation
    log_features: bool = True  # gp: place positive numeric choices by log value, not index
    alignment_feature: bool = True  # gp: a power-of-two column per mixed integer parameter
    y_cap_quantile: float = 1.0  # gp: flatten log times above this quantile (1.0: none)
    candidate_pool: int = 2000  # gp: score this many random free points per step (0: all)
    aligned_pool: bool = True  # gp: ...drawn from aligned points (unaligned: neighbours only)
    acquisition: str = "ei"  # gp: one of ACQUISITIONS (autotune.proposal)
    surrogate: str = "gp"  # gp: "gp" (Gaussian process) or "forest" (random forest)
    length_prior: bool = False  # gp: length scales by MAP under a dimension-scaled prior
    fit_restarts: int = 0  # gp: random restarts of the likelihood fit every 10 observations
    local_every: int = 3  # gp: every k-th proposal is the best neighbour of the best (0: never)
    startup_fraction: float = 0.2  # tpe: uniform valid samples before TPE, fraction of budget...
    min_startup: int = 4  # ...but at least this many
    max_startup: int = 12  # ...and at most this many
    multivariate: bool = True  # tpe
    n_ei_candidates: int = 24  # tpe
    penalize_failures: bool = True  # tell failed evaluations as the worst value, else as FAIL
    exhaustive_when_covered: bool = True

    def __post_init__(self) -> None:
        if self.acquisition not in ACQUISITIONS:
            raise ValueError(
                f"acquisition={self.acquisition!r}: expected one of {', '.join(ACQUISITIONS)}"
            )
        if self.surrogate not in SURROGATES:
            raise ValueError(
                f"surrogate={self.surrogate!r}: expected one of {', '.join(SURROGATES)}"
            )
        if self.initial_design not in INITIAL_DESIGNS:
            raise ValueError(
                f"initial_design={self.initial_design!r}: expected one of "
                f"{', '.join(INITIAL_DESIGNS)}"
            )
        if not 0.0 < self.y_cap_quantile <= 1.0:
            raise ValueError(
                f"y_cap_quantile={self.y_cap_quantile!r}: expected a fraction in (0, 1]"
            )
        if self.aligned_start < 0:
            raise ValueError(
                f"aligned_start={self.aligned_start!r}: expected a count of initial points >= 0"
            )
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r}: expected one of {', '.join(MODELS)}")

    def startup(self, budget: int) -> int:
        if self.model == "gp":
            return self.initial_points
        return max(self.min_startup, min(self.max_startup, round(self.startup_fraction * budget)))


# Named candidates: overrides of the default StrategySettings (docs/search-candidates.md).
# The candidates measured before the aligned start (11/2026) keep the unaligned design and
# pool and the pure-EI steps they were measured with, so each name still replays its row.
UNALIGNED: dict[str, Any] = {"aligned_start": 0, "aligned_pool": False, "local_every": 0}
PRESETS: dict[str, dict[str, Any]] = {
    "gp": {},  # the default: GP on log + power-of-two features, aligned maximin start of 8,
    # EI over a pool sampled from aligned points plus every neighbour of the best five, every
    # third step the best-predicted neighbour of the best
    "gp-aligned-pool": {"local_every": 0},  # the default without the neighbour steps
    "gp-aligned-start": {"aligned_pool": False, "local_every": 0},  # the aligned start alone
    "gp-aligned-6": {"aligned_start": 6, "aligned_pool": False, "local_every": 0},
    "gp-unaligned": UNALIGNED,  # the default before the aligned start
    "gp-index5": {  # the first GP default: index features, 5 uniform starts
        **UNALIGNED,
        "log_features": False,
        "alignment_feature": False,
        "initial_points": 5,
        "initial_design": "random",
    },
    "gp-restarts": {**UNALIGNED, "fit_restarts": 2},
    "gp-forest": {**UNALIGNED, "surrogate": "forest"},
    "gp-both": {**UNALIGNED, "surrogate": "both"},
    "gp-both-restarts": {**UNALIGNED, "surrogate": "both", "fit_restarts": 2},
    "gp-mixed": {**UNALIGNED, "initial_design": "mixed"},
    "gp-lhs": {**UNALIGNED, "initial_design": "lhs"},
    "gp-start5": {**UNALIGNED, "initial_points": 5},
    "gp-prior": {**UNALIGNED, "length_prior": True},
    "gp-hedge": {**UNALIGNED, "acquisition": "hedge"},
    "gp-ts": {**UNALIGNED, "acquisition": "ts"},
    "gp-multi": {**UNALIGNED, "acquisition": "multi"},
    "gp-local3": {**UNALIGNED, "local_every": 3},
}


def preset_settings(name: str, base: StrategySettings | None = None) -> StrategySettings:
    """The named candidate's settings: `base` (default: the defaults) with its overrides."""
    if name not in PRESETS:
        raise ValueError(f"strategy={name!r}: expected one of {', '.join(PRESETS)}")
    merged = {**asdict(base or StrategySettings()), **PRESETS[name], "model": "gp"}
    return StrategySettings(**merged)
