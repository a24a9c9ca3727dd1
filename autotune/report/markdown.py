"""The sections of performance_report.md, each rendered from the analyses as Markdown text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autotune.hotspots import Pattern
from autotune.report.kernels import KernelRow
from autotune.report.patterns import Candidate, SizeTrend
from autotune.report.prediction import Interval
from autotune.report.tiers import SIGNIFICANCE, TierAnalysis, problem_label


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def kernels_section(
    rows: Sequence[KernelRow], interval: Interval, skipped: Sequence[str]
) -> list[str]:
    lines = ["## Tuned kernels", ""]
    if not rows:
        lines += ["No tuned entries in the cache.", ""]
    else:
        body = []
        for row in rows:
            speedup = row.speedup
            prediction = "—"
            if row.model_ms is not None:
                low, high = interval.around(row.model_ms)
                prediction = f"{ms(row.model_ms)} [{ms(low)}, {ms(high)}]"
            samples = f" (n={row.measured_samples})" if row.measured_samples else ""
            body.append(
                [
                    f"`{row.kernel_key}`",
                    f"`{row.config}`",
                    f"{ms(row.tuned.time_ms)} {row.tuned.kind}{samples}",
                    f"{row.tflops:.3g}",
                    f"{row.peak_fraction * 100:.3g}%",
                    f"`{row.default_config}`",
                    "—" if row.default is None else f"{ms(row.default.time_ms)} {row.default.kind}",
                    "—" if speedup is None else f"{speedup.time_ms:.2f}x {speedup.kind}",
                    prediction,
                    str(row.trials_run),
                ]
            )
        lines += table(
            [
                "kernel_key",
                "tuned config",
                "time ms",
                "TFLOP/s",
                "of peak",
                "default config",
                "default ms",
                "speedup",
                "model ms [interval]",
                "trials",
            ],
            body,
        )
        lines += [
            "",
            "`measured`: median of GPU timings (CUDA events) after a correctness check; "
            "`model`: the analytical cost model (autotune.cost_model) on the kernel's real ptxas "
            "resources. TFLOP/s and the fraction of the arch's dense fp16 tensor peak "
            "(tessera_core.hardware) are computed from the time in the `time ms` column. The "
            "speedup compares like with like: both measured, else both modelled. "
            f"Model interval {interval.basis}.",
            "",
        ]
    if skipped:
        lines += ["Entries without a tuning outcome (not in the table):", ""]
        lines += [f"- {reason}" for reason in skipped] + [""]
    return lines


def pairs_section(pairs: Sequence[tuple[str, float, float]], interval: Interval) -> list[str]:
    lines = ["### Model vs measurement", ""]
    if not pairs:
        return [
            *lines,
            "No measurements (no `measured` objective in the cache and no `--device-report`): "
            "every time above is the model's.",
            "",
        ]
    body = []
    for label, model, measured in pairs:
        low, high = interval.around(model)
        inside = "yes" if low <= measured <= high else "no"
        body.append(
            [
                f"`{label}`",
                ms(measured),
                ms(model),
                f"[{ms(low)}, {ms(high)}]",
                inside,
                f"{measured / model:.2f}",
            ]
        )
    return [
        *lines,
        *table(
            ["kernel config", "measured ms", "model ms", "interval", "inside", "measured/model"],
            body,
        ),
        "",
    ]


def tiers_section(analysis: TierAnalysis | None, trace_name: str | None) -> list[str]:
    lines = ["## Tiers", ""]
    if analysis is None:
        return [*lines, "No trace given (`--trace FILE`): no tier statistics.", ""]
    events = ", ".join(f"{n} {event}" for event, n in analysis.events.items()) or "none"
    lines += [
        f"Trace `{trace_name}`: {analysis.calls} successful call(s), "
        f"{analysis.failed_calls} failed; other events: {events}.",
        "",
        "### Tier mix",
        "",
    ]
    lines += table(
        ["tier", "calls", "share of calls", "total ms", "share of time"],
        [
            [
                str(s.tier),
                str(s.calls),
                f"{s.call_share:.1%}",
                ms(s.total_ms),
                f"{s.time_share:.1%}",
            ]
            for s in analysis.mix
        ],
    )
    lines += ["", "### Per-tier time distributions", ""]
    lines += table(
        ["problem", "tier", "n", "mean ± std ms", "median ms", "p10–p90 ms", "min–max ms"],
        [
            [
                problem_label(d.problem),
                str(d.tier),
                str(d.stats.n),
                f"{ms(d.stats.mean_ms)} ± {ms(d.stats.std_ms)}",
                ms(d.stats.median_ms),
                f"{ms(d.stats.p10_ms)}–{ms(d.stats.p90_ms)}",
                f"{ms(d.stats.min_ms)}–{ms(d.stats.max_ms)}",
            ]
            for d in analysis.distributions
        ],
    )
    lines += ["", "### Speedups between tiers", ""]
    if not analysis.speedups:
        return [*lines, "No problem ran at two tiers: no speedup to test.", ""]
    lines += table(
        [
            "problem",
            "tier",
            "over tier",
            "speedup (median base / median tier)",
            "95% bootstrap CI",
            "U",
            "p",
            "n (base, tier)",
            "significant",
        ],
        [
            [
                problem_label(s.problem),
                str(s.tier),
                str(s.baseline),
                f"{s.ratio.ratio:.3g}x",
                f"[{s.ratio.low:.3g}, {s.ratio.high:.3g}]",
                f"{s.test.u:g}",
                f"{s.test.p_value:.2g}",
                f"{s.test.n_x}, {s.test.n_y}",
                "yes" if s.significant else "no",
            ]
            for s in analysis.speedups
        ],
    )
    lines += [
        "",
        "Tiers 2 and 3 over tier 1, and tier 3 over tier 2 (what the tuned, shape-specialized "
        "kernel adds). Speedup: ratio of the median call times, with a percentile bootstrap "
        f"interval ({analysis.speedups[0].ratio.resamples} resamples, each tier resampled "
        "apart). U: Mann-Whitney U of the base tier's times against the tier's (pairs where "
        "the base was slower; ties count one half), two-sided p from the tie-corrected normal "
        f"approximation with continuity correction; significant at p < {SIGNIFICANCE}. The "
        "approximation needs about 8 samples a side: read p with n. Timings are wall times of "
        "the whole call on this machine's device (the emulator runs compiled tiers on the CPU).",
        "",
    ]
    return lines


def consistency_section(bench: Mapping[str, Any] | None) -> list[str]:
    lines = ["### Cross-tier consistency", ""]
    if bench is None:
        return [
            *lines,
            "Not recorded: a runtime trace keeps timings, not outputs. `python -m runtime.bench` "
            "runs each problem's inputs through every tier and writes the max error between "
            "tiers to its summary (`--bench FILE`).",
            "",
        ]
    checks = bench.get("consistency", [])
    if not checks:
        return [*lines, "The bench summary holds no consistency checks.", ""]
    body = [
        [
            str(c["problem"]),
            str(c["tier"]),
            f"{c['max_abs_err']:.3g}",
            f"{c['rel_err']:.3g}",
            f"{c['tolerance']:.3g}",
            "ok" if c["ok"] else "**FAIL**",
        ]
        for c in checks
    ]
    return [
        *lines,
        *table(
            ["problem", "tier vs 1", "max abs error", "normwise rel error", "rel tolerance", ""],
            body,
        ),
        "",
        "Each compiled tier's output against tier 1's on the same inputs (float64 comparison; "
        "the tolerance is generator.verify's normwise bound for the dtype).",
        "",
    ]


def patterns_section(
    consistency: Sequence[Pattern],
    trends: Sequence[SizeTrend],
    candidates: Sequence[Candidate],
    has_trace: bool,
) -> list[str]:
    lines = ["## Patterns", ""]
    if not has_trace:
        return [*lines, "No trace given: no pattern analysis.", ""]
    lines += ["### Shape and dtype consistency", ""]
    lines += table(
        ["op", "calls", "shapes", "top shape share", "dtypes", "top dtype share", "verdict"],
        [
            [
                p.op,
                str(p.calls),
                str(p.shapes),
                f"{p.top_shape_share:.0%}",
                str(p.dtypes),
                f"{p.top_dtype_share:.0%}",
                p.verdict(),
            ]
            for p in consistency
        ],
    )
    lines += ["", "### Performance vs size", ""]
    lines += table(
        ["op", "dtype", "tier", "sizes", "log-log slope", "R²", "verdict"],
        [
            [
                t.op,
                t.dtype,
                str(t.tier),
                str(len(t.points)),
                "—" if t.fit is None else f"{t.fit.slope:.3f}",
                "—" if t.fit is None else f"{t.fit.r_squared:.3f}",
                t.verdict(),
            ]
            for t in trends
        ],
    )
    lines += [
        "",
        "Least-squares fit of log(median call time) against log(problem FLOPs) over the "
        "distinct shapes of each (op, dtype, tier).",
        "",
        "### Optimization candidates",
        "",
    ]
    if not candidates:
        return [
            *lines,
            "None: every traced problem ran at tier 3, or the model expects no gain over the "
            "default tiles from any tuned configuration it could try.",
            "",
        ]
    lines += table(
        [
            "#",
            "kind",
            "problem",
            "config",
            "model gain",
            "traced ms below tier 3",
            "expected ms saved",
            "why",
        ],
        [
            [
                str(i),
                c.kind,
                problem_label(c.problem),
                f"`{c.config}`",
                f"{c.expected_gain:.2f}x",
                ms(c.traced_ms),
                ms(c.saved_ms),
                c.detail,
            ]
            for i, c in enumerate(candidates, 1)
        ],
    )
    return [
        *lines,
        "",
        "Model gain: the cost model's time for the default (tier 2) tiles over its time for "
        "the candidate config; expected saving = traced time × (1 − 1/gain).",
        "",
    ]
