"""The tiered runtime: one call per op; tier 1 reference, tier 2 generic, tier 3 specialized."""

from runtime.config import RuntimeConfig
from runtime.runtime import Runtime
from runtime.specialized import SpecializedKernel, load_specialized
from runtime.stats import RuntimeStats
from runtime.tiers import Tier

__all__ = [
    "Runtime",
    "RuntimeConfig",
    "RuntimeStats",
    "SpecializedKernel",
    "Tier",
    "load_specialized",
]
