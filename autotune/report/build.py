"""Assemble performance_report.md and its PNGs from a cache, a trace and optional measurements."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.hotspots import TraceRecord
from autotune.report import markdown, plots
from autotune.report.inputs import Measurement, TunedEntry
from autotune.report.kernels import interval_for, kernel_rows, model_pairs
from autotune.report.patterns import candidates, consistency, size_trends
from autotune.report.prediction import ModelOracle
from autotune.report.tiers import analyse_tiers, times_by_problem_and_tier
from tessera_core.hardware import DEFAULT_ARCH

REPORT_NAME = "performance_report.md"
NO_PLOTS = (
    "matplotlib is not installed: this report is text only "
    "(`pip install 'tessera-autotune[plots]'` adds the plots)."
)


@dataclass(frozen=True, kw_only=True)
class ReportInputs:
    """Everything the report is built from; each part may be empty."""

    entries: Sequence[TunedEntry] = ()
    skipped: Sequence[str] = ()
    records: Sequence[TraceRecord] = ()
    trace_name: str | None = None
    trials: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    measurements: Sequence[Measurement] = ()
    bench: Mapping[str, Any] | None = None
    sources: Sequence[str] = ()  # one line per input, for the report's header
    arch: str | None = None  # for candidates; default: the bench's, else the entries', else sm_90


@dataclass(frozen=True)
class Report:
    path: Path
    plots: list[Path]
    plots_available: bool


def _arch(inputs: ReportInputs) -> str:
    if inputs.arch:
        return inputs.arch
    if inputs.bench and inputs.bench.get("arch"):
        return str(inputs.bench["arch"])
    archs = sorted({e.arch for e in inputs.entries})
    return archs[0] if archs else DEFAULT_ARCH


def build_report(
    inputs: ReportInputs,
    out_dir: Path,
    *,
    oracle: ModelOracle | None = None,
    now: datetime.datetime | None = None,
) -> Report:
    """Write performance_report.md (and the PNGs, when matplotlib is present) into `out_dir`."""
    oracle = oracle or ModelOracle()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = kernel_rows(inputs.entries, oracle, inputs.measurements)
    pairs = model_pairs(rows, inputs.measurements, oracle)
    interval = interval_for(pairs)
    records = list(inputs.records)
    analysis = analyse_tiers(records) if records else None
    arch = _arch(inputs)
    found = candidates(records, inputs.entries, oracle, arch=arch) if records else []
    trials: dict[str, Sequence[Mapping[str, Any]]] = {
        e.kernel_key: e.trials for e in inputs.entries if e.trials
    }
    trials.update(inputs.trials)

    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Performance report", "", f"Generated {stamp} from:", ""]
    lines += [f"- {source}" for source in inputs.sources] or ["- nothing (no inputs given)"]
    lines += [""]
    plt = plots.pyplot()
    lines += [NO_PLOTS if plt is None else "Plots: the PNG files beside this report.", ""]
    lines += markdown.kernels_section(rows, interval, inputs.skipped)
    lines += markdown.pairs_section(pairs, interval)
    lines += markdown.tiers_section(analysis, inputs.trace_name)
    if analysis is not None:
        lines += markdown.consistency_section(inputs.bench)
    lines += markdown.patterns_section(
        consistency(records), size_trends(records), found, has_trace=bool(records)
    )
    if oracle.failures:
        lines += ["Configurations without a model time:", ""]
        lines += [f"- `{what}`: {why}" for what, why in sorted(oracle.failures.items())] + [""]

    made: list[Path] = []
    if plt is not None:
        made, notes = _plots(plt, out_dir, rows, records, trials, pairs)
        lines += ["## Plots", "", *notes]
    path = out_dir / REPORT_NAME
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return Report(path=path, plots=made, plots_available=plt is not None)


def _plots(
    plt: Any,
    out_dir: Path,
    rows: Sequence[Any],
    records: Sequence[TraceRecord],
    trials: Mapping[str, Sequence[Mapping[str, Any]]],
    pairs: Sequence[tuple[str, float, float]],
) -> tuple[list[Path], list[str]]:
    """Draw every plot the inputs allow; say in the report why any other is missing."""
    made, notes = [], []

    def add(name: str, title: str, path: Path) -> None:
        made.append(path)
        notes.extend([f"![{title}]({name})", "", f"*{title}*", ""])

    if trials:
        add(
            "best_so_far.png",
            "Best-so-far during each tuning run",
            plots.best_so_far(plt, trials, out_dir / "best_so_far.png"),
        )
    else:
        notes += [
            "No best-so-far plot: the cache entries keep no trial records and no `--trials` "
            "file was given.",
            "",
        ]
    if records and any(r.event == "call" and r.ok for r in records):
        add(
            "tier_timeline.png",
            "Tier timeline of the trace",
            plots.tier_timeline(plt, records, out_dir / "tier_timeline.png"),
        )
        add(
            "tier_distributions.png",
            "Per-tier time distributions",
            plots.tier_distributions(
                plt, times_by_problem_and_tier(records), out_dir / "tier_distributions.png"
            ),
        )
    else:
        notes += ["No tier plots: no trace with successful calls.", ""]
    if rows:
        add(
            "roofline.png",
            "Tuned kernels on the roofline",
            plots.roofline(plt, rows, out_dir / "roofline.png"),
        )
    else:
        notes += ["No roofline: no tuned kernels.", ""]
    if pairs:
        add(
            "model_vs_measured.png",
            "Model vs measured",
            plots.model_vs_measured(plt, pairs, out_dir / "model_vs_measured.png"),
        )
    else:
        notes += ["No model-vs-measured scatter: no measurements.", ""]
    return made, notes
