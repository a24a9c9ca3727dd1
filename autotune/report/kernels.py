"""Per kernel_key rows: tuned vs default config, throughput, and where each number came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autotune.report.inputs import Measurement, TunedEntry
from autotune.report.prediction import Interval, ModelOracle, calibrate, default_config
from tessera_core.hardware import arch_spec
from tessera_core.types import Problem, TileConfig


@dataclass(frozen=True)
class Timed:
    """A time and its origin: 'measured' (GPU timing) or 'model' (the cost model)."""

    time_ms: float
    kind: str


@dataclass(frozen=True)
class KernelRow:
    """One tuned kernel_key of the cache."""

    kernel_key: str
    problem: Problem
    arch: str
    config: TileConfig
    tuned: Timed
    default_config: TileConfig
    default: Timed | None  # None: no measurement and no model time for it
    model_ms: float | None  # the model's prediction for the tuned config
    model_default_ms: float | None
    trials_run: int
    measured_samples: int | None = None

    @property
    def tflops(self) -> float:
        return self.problem.flops() / (self.tuned.time_ms * 1e-3) / 1e12

    @property
    def peak_fraction(self) -> float:
        return self.tflops / arch_spec(self.arch).tensor_tflops

    @property
    def arithmetic_intensity(self) -> float:
        """Useful FLOPs per DRAM byte the problem must move (its roofline x coordinate)."""
        return self.problem.flops() / self.problem.io_bytes()

    @property
    def speedup(self) -> Timed | None:
        """default / tuned on like numbers: both measured, else both modelled."""
        if self.default is not None and self.default.kind == self.tuned.kind:
            return Timed(self.default.time_ms / self.tuned.time_ms, self.tuned.kind)
        if self.model_default_ms and self.model_ms:
            return Timed(self.model_default_ms / self.model_ms, "model")
        return None


def _measured(
    measurements: Sequence[Measurement], key: str, config: TileConfig, *, tuned: bool
) -> Measurement | None:
    for m in measurements:
        if m.kernel_key == key and (m.config == config or (tuned and m.config is None)):
            return m
    return None


def kernel_rows(
    entries: Sequence[TunedEntry],
    oracle: ModelOracle,
    measurements: Sequence[Measurement] = (),
) -> list[KernelRow]:
    """One row per tuned entry; measurements override modelled times of the same config."""
    rows = []
    for entry in entries:
        problem, arch = entry.problem, entry.arch
        tuned_cost = oracle.estimate(problem, entry.config, arch, resources=entry.resources)
        model_ms = tuned_cost.time_ms if tuned_cost is not None else None
        if entry.objective_kind == "model" and model_ms is None:
            model_ms = entry.time_ms  # the stored objective is the model's own number
        tuned = Timed(entry.time_ms, entry.objective_kind)
        samples = None
        measured = _measured(measurements, entry.kernel_key, entry.config, tuned=True)
        if measured is not None:
            tuned, samples = Timed(measured.time_ms, "measured"), measured.samples
        fallback = default_config(problem, arch)
        model_default_ms = (
            model_ms if fallback == entry.config else oracle.time_ms(problem, fallback, arch)
        )
        default: Timed | None = None
        measured_default = _measured(measurements, entry.kernel_key, fallback, tuned=False)
        if fallback == entry.config:
            default = tuned
        elif measured_default is not None:
            default = Timed(measured_default.time_ms, "measured")
        elif model_default_ms is not None:
            default = Timed(model_default_ms, "model")
        rows.append(
            KernelRow(
                kernel_key=entry.kernel_key,
                problem=problem,
                arch=arch,
                config=entry.config,
                tuned=tuned,
                default_config=fallback,
                default=default,
                model_ms=model_ms,
                model_default_ms=model_default_ms,
                trials_run=int(entry.search.get("trials_run", 0)),
                measured_samples=samples,
            )
        )
    return rows


def model_pairs(
    rows: Sequence[KernelRow], measurements: Sequence[Measurement], oracle: ModelOracle
) -> list[tuple[str, float, float]]:
    """(label, model_ms, measured_ms) for every measurement the model can predict."""
    by_key = {row.kernel_key: row for row in rows}
    pairs = []
    for row in rows:  # tuned with the measured objective (or measured in the device report)
        if row.tuned.kind == "measured" and row.model_ms is not None:
            pairs.append((f"{row.kernel_key} {row.config}", row.model_ms, row.tuned.time_ms))
    for m in measurements:
        if m.config is None or (m.kernel_key in by_key and m.config == by_key[m.kernel_key].config):
            continue  # the tuned config's measurement: counted with its row above
        found = by_key.get(m.kernel_key)
        if found is None:
            continue
        model = oracle.time_ms(found.problem, m.config, found.arch)
        if model is not None:
            pairs.append((f"{m.kernel_key} {m.config}", model, m.time_ms))
    return pairs


def interval_for(pairs: Sequence[tuple[str, float, float]]) -> Interval:
    return calibrate([(model, measured) for _, model, measured in pairs])
