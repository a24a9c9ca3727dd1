"""The report's PNG plots (matplotlib: the optional extra `tessera-autotune[plots]`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.hotspots import TraceRecord
from autotune.report.kernels import KernelRow
from autotune.report.tiers import problem_order
from tessera_core.hardware import arch_spec

FIGSIZE_IN = (6.4, 4.0)
DPI = 100  # small PNGs: a report directory stays a few hundred KB
TIER_COLORS = {1: "tab:gray", 2: "tab:blue", 3: "tab:green"}


def pyplot() -> Any | None:
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def best_so_far(plt: Any, trials: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Per tuning run: the best time found after each trial (failed trials keep the best)."""
    fig, ax = plt.subplots(figsize=FIGSIZE_IN)
    for key, records in sorted(trials.items()):
        best, xs, ys = math.inf, [], []
        ordered = sorted(records, key=lambda r: int(r.get("number", 0)))
        for i, record in enumerate(ordered, 1):
            value = record.get("value_ms")
            if record.get("status") == "ok" and value is not None:
                best = min(best, float(value))
            if best < math.inf:
                xs.append(i)
                ys.append(best)
        kinds = {str(r["kind"]) for r in records if r.get("kind")}
        ax.step(xs, ys, where="post", marker=".", label=f"{key} ({'/'.join(sorted(kinds))})")
    ax.set_xlabel("trial (proposals in order)")
    ax.set_ylabel("best time so far (ms)")
    ax.set_title("Best-so-far during each tuning run")
    ax.legend(fontsize=6, loc="upper right")
    return _save(plt, fig, path)


def tier_timeline(plt: Any, records: Sequence[TraceRecord], path: Path) -> Path:
    """Each call's wall time against its start time, coloured by tier; promotions as lines."""
    calls = [r for r in records if r.event == "call" and r.ok]
    start = min(r.time_s for r in records)
    fig, ax = plt.subplots(figsize=FIGSIZE_IN)
    for tier in sorted({r.tier for r in calls}):
        group = [r for r in calls if r.tier == tier]
        ax.scatter(
            [r.time_s - start for r in group],
            [r.wall_ms for r in group],
            s=10,
            color=TIER_COLORS.get(tier, "tab:red"),
            label=f"tier {tier} ({len(group)} calls)",
        )
    for r in records:
        if r.event == "promote":
            ax.axvline(r.time_s - start, color=TIER_COLORS.get(r.tier, "k"), lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("time since the first record (s); dotted: promotions")
    ax.set_ylabel("call wall time (ms)")
    ax.set_title("Tier timeline of the trace")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def tier_distributions(
    plt: Any, grouped: Mapping[Any, Mapping[int, Sequence[float]]], path: Path
) -> Path:
    """Box plots of call times per (problem, tier)."""
    data, labels, colors = [], [], []
    # Reversed: box plots stack upwards, so the table's first row ends up on top.
    for problem in sorted(grouped, key=problem_order, reverse=True):
        for tier, times in sorted(grouped[problem].items(), reverse=True):
            data.append(list(times))
            mask = " causal" if getattr(problem, "causal", False) else ""
            labels.append(f"{problem.op} {problem.shape_str()} {problem.dtype}{mask} t{tier}")
            colors.append(TIER_COLORS.get(tier, "tab:red"))
    fig, ax = plt.subplots(figsize=(FIGSIZE_IN[0], max(FIGSIZE_IN[1], 0.25 * len(data) + 1)))
    box = ax.boxplot(data, orientation="horizontal", patch_artist=True)
    for patch, color in zip(box["boxes"], colors, strict=True):
        patch.set_facecolor(color)
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("call wall time (ms)")
    ax.set_title("Per-tier time distributions")
    return _save(plt, fig, path)


def roofline(plt: Any, rows: Sequence[KernelRow], path: Path) -> Path:
    """Each tuned kernel (and its default config) on its arch's roofline."""
    fig, ax = plt.subplots(figsize=FIGSIZE_IN)
    intensities = [row.arithmetic_intensity for row in rows]
    ridges = [
        arch_spec(row.arch).tensor_tflops * 1e3 / arch_spec(row.arch).mem_gbps for row in rows
    ]
    xs = [min(intensities) / 4, max(*intensities, *ridges) * 4]  # show where each roof bends
    grid = [xs[0] * (xs[1] / xs[0]) ** (i / 63) for i in range(64)]
    for arch in sorted({row.arch for row in rows}):
        spec = arch_spec(arch)
        roof = [min(spec.tensor_tflops, x * spec.mem_gbps * 1e9 / 1e12) for x in grid]
        ax.plot(grid, roof, lw=1, label=f"{arch} roof ({spec.gpu})")
    for row in rows:
        marker = "o" if row.tuned.kind == "measured" else "^"
        ax.scatter(row.arithmetic_intensity, row.tflops, marker=marker, s=30, zorder=3)
        ax.annotate(row.problem.shape_str(), (row.arithmetic_intensity, row.tflops), fontsize=6)
        if row.default is not None and row.default.time_ms > 0:
            default_tflops = row.problem.flops() / (row.default.time_ms * 1e-3) / 1e12
            ax.plot([row.arithmetic_intensity] * 2, [default_tflops, row.tflops], color="k", lw=0.5)
            ax.scatter(row.arithmetic_intensity, default_tflops, marker="x", color="k", s=15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per DRAM byte)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title("Tuned kernels on the roofline\n(^ model time, o measured, x default config)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(plt, fig, path)


def model_vs_measured(plt: Any, pairs: Sequence[tuple[str, float, float]], path: Path) -> Path:
    """Measured time against the model's prediction, with the y = x line."""
    fig, ax = plt.subplots(figsize=FIGSIZE_IN)
    model = [m for _, m, _ in pairs]
    measured = [t for _, _, t in pairs]
    ax.scatter(model, measured, s=20)
    low, high = min(model + measured) / 1.5, max(model + measured) * 1.5
    ax.plot([low, high], [low, high], color="k", lw=0.7, label="measured = model")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model time (ms)")
    ax.set_ylabel("measured time (ms)")
    ax.set_title(f"Model vs measured ({len(pairs)} configurations)")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)
