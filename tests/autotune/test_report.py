"""The performance report built from a cache and a trace made here, checked against values
computed independently (pair-counted U, medians, the cost model called directly)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autotune.cost_model import estimate
from autotune.hotspots import TraceRecord
from autotune.report import ReportInputs, build_report, plots
from autotune.report.__main__ import main
from autotune.report.inputs import load_trials, tuned_entries, write_trials
from autotune.report.prediction import DEFAULT_FACTOR, ModelOracle, Resources, calibrate
from cache.store import KernelCache
from templates.registry import get_family
from tessera_core.types import AttentionProblem, Problem, TileConfig

ARCH = "sm_90"
RESOURCES = Resources(registers=96, static_smem_bytes=0)
TUNED_PROBLEM = AttentionProblem(1, 2, 128, 128, 64)
UNTUNED_PROBLEM = AttentionProblem(1, 2, 256, 256, 64)
TUNED = TileConfig(block_m=32, block_n=64, block_k=16, num_warps=2, num_stages=2)
TIER1_MS = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
TIER3_MS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
UNTUNED_TIER2_MS = [30.0, 31.0, 33.0]


def _model_ms(problem: Problem, config: TileConfig) -> float:
    family = get_family(problem.family)
    return estimate(
        problem,
        config,
        RESOURCES,
        dynamic_smem_bytes=family.smem_bytes(problem, config),
        arch=ARCH,
    ).time_ms


def _oracle() -> ModelOracle:
    return ModelOracle(resources_fn=lambda problem, config, arch: RESOURCES)


def _put(cache_dir: Path, problem: Problem, config: TileConfig, time_ms: float, kind: str) -> str:
    key = problem.kernel_key(ARCH)
    KernelCache(cache_dir=cache_dir, read_only_dirs=()).put(
        key,
        cubin=b"\x7fELF placeholder",
        ptx=None,
        metadata={
            "arch": ARCH,
            "problem": problem.to_dict(),
            "config": config.to_dict(),
            "objective": {"kind": kind, "time_ms": time_ms, "tflops": 0.0},
            "resources": {
                "registers": RESOURCES.registers,
                "static_smem_bytes": 0,
                "spill_store_bytes": 0,
                "spill_load_bytes": 0,
                "stack_bytes": 0,
            },
            "search": {"trials_run": 4},
            "template_hash": "t" * 64,
        },
    )
    return key


def _record(problem: AttentionProblem, t: float, tier: int, ms: float, **kw: Any) -> TraceRecord:
    return TraceRecord(
        time_s=t,
        event=kw.pop("event", "call"),
        op="attention",
        dtype=problem.dtype,
        shape=(problem.batch, problem.heads, problem.seq_q, problem.seq_kv, problem.head_dim),
        causal=problem.causal,
        scale=None,
        tier=tier,
        wall_ms=ms,
        **kw,
    )


def _trace() -> list[TraceRecord]:
    records = [_record(TUNED_PROBLEM, i, 1, ms) for i, ms in enumerate(TIER1_MS)]
    records.append(_record(TUNED_PROBLEM, 20, 3, 0.0, event="promote"))
    records += [_record(TUNED_PROBLEM, 30 + i, 3, ms) for i, ms in enumerate(TIER3_MS)]
    records += [_record(UNTUNED_PROBLEM, 50 + i, 2, ms) for i, ms in enumerate(UNTUNED_TIER2_MS)]
    return records


@pytest.fixture
def text_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip drawing (a second per plot on a busy CI core) in tests that read the text only."""
    monkeypatch.setattr(plots, "pyplot", lambda: None)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    root = tmp_path / "kernels"
    _put(root, TUNED_PROBLEM, TUNED, _model_ms(TUNED_PROBLEM, TUNED), "model")
    return root


def _inputs(cache_dir: Path, **kw: Any) -> ReportInputs:
    entries, skipped = tuned_entries(KernelCache(cache_dir=cache_dir, read_only_dirs=()).entries())
    return ReportInputs(entries=entries, skipped=skipped, records=_trace(), trace_name="t", **kw)


def _assert_png_has_content(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)[..., :3]
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    distinct = np.unique(pixels.reshape(-1, 3), axis=0)
    not_white = np.mean(np.any(pixels < 0.95, axis=-1))
    assert len(distinct) > 20, f"{path.name}: {len(distinct)} colours, looks blank"
    assert 0.01 < not_white < 0.9, f"{path.name}: {not_white:.1%} of pixels drawn"


def test_kernel_row_has_config_throughput_default_and_model_speedup(
    cache_dir: Path, tmp_path: Path, text_only: None
) -> None:
    report = build_report(_inputs(cache_dir), tmp_path / "out", oracle=_oracle())
    text = report.path.read_text()
    tuned_ms = _model_ms(TUNED_PROBLEM, TUNED)
    default = get_family("attention").default_config(TUNED_PROBLEM, ARCH)
    default_ms = _model_ms(TUNED_PROBLEM, default)
    tflops = TUNED_PROBLEM.flops() / (tuned_ms * 1e-3) / 1e12
    row = next(line for line in text.splitlines() if TUNED_PROBLEM.kernel_key(ARCH) in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"`{TUNED}`"
    assert cells[2] == f"{tuned_ms:.4g} model"
    assert cells[3] == f"{tflops:.3g}"
    assert cells[4] == f"{tflops / 989.4 * 100:.3g}%"  # H100 SXM dense fp16 peak
    assert cells[5] == f"`{default}`"
    assert cells[6] == f"{default_ms:.4g} model"
    assert cells[7] == f"{default_ms / tuned_ms:.2f}x model"
    low, high = tuned_ms / DEFAULT_FACTOR, tuned_ms * DEFAULT_FACTOR
    assert cells[8] == f"{tuned_ms:.4g} [{low:.4g}, {high:.4g}]"
    assert cells[9] == "4"  # the search's trials, from the entry's summary


def test_tier_speedup_row_matches_hand_computed_statistics(
    cache_dir: Path, tmp_path: Path, text_only: None
) -> None:
    text = build_report(_inputs(cache_dir), tmp_path / "out", oracle=_oracle()).path.read_text()
    u = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in TIER1_MS for b in TIER3_MS)
    assert u == 48.0  # every tier-1 call slower than every tier-3 call
    z = (u - 48 / 2 - 0.5) / math.sqrt(8 * 6 * (8 + 6 + 1) / 12)
    p = math.erfc(z / math.sqrt(2))
    ratio = float(np.median(TIER1_MS) / np.median(TIER3_MS))
    speedups = text.split("### Speedups between tiers")[1]
    row = next(
        line
        for line in speedups.splitlines()
        if line.startswith("| attention fp16 1x2x128x128x64 | 3 | 1 | ")
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{ratio:.3g}x"
    assert cells[5:] == [f"{u:g}", f"{p:.2g}", "8, 6", "yes"]
    assert "| 3 | 2 |" not in speedups  # the tuned problem never ran at tier 2
    # The tier mix: 14 + 3 calls; tier 1's share of calls 8/17.
    assert f"| 1 | 8 | {8 / 17:.1%} | {sum(TIER1_MS):.4g} |" in text
    assert "Not recorded: a runtime trace keeps timings, not outputs." in text


def test_untuned_hot_problem_is_a_shape_candidate_with_the_model_gain(
    cache_dir: Path, tmp_path: Path, text_only: None
) -> None:
    text = build_report(_inputs(cache_dir), tmp_path / "out", oracle=_oracle()).path.read_text()
    default = get_family("attention").default_config(UNTUNED_PROBLEM, ARCH)
    gain = _model_ms(UNTUNED_PROBLEM, default) / _model_ms(UNTUNED_PROBLEM, TUNED)
    saved = sum(UNTUNED_TIER2_MS) * (1 - 1 / gain)
    row = next(line for line in text.splitlines() if line.startswith("| 1 | shape |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:7] == [
        "attention fp16 1x2x256x256x64",
        f"`{TUNED}`",
        f"{gain:.2f}x",
        f"{sum(UNTUNED_TIER2_MS):.4g}",
        f"{saved:.4g}",
    ]
    # The tuned problem ended the trace at tier 3: not a candidate.
    assert "| tile |" not in text


def test_measurements_enter_the_table_and_the_scatter(cache_dir: Path, tmp_path: Path) -> None:
    device_report = tmp_path / "device_report.json"
    key = TUNED_PROBLEM.kernel_key(ARCH)
    default = get_family("attention").default_config(TUNED_PROBLEM, ARCH)
    device_report.write_text(
        json.dumps(
            {
                "records": [
                    {"kernel_key": key, "time_ms": 0.02, "samples": 20},
                    {"kernel_key": key, "config": default.to_dict(), "time_ms": 0.03},
                    {"toolchain": "not a timing"},
                ]
            }
        )
    )
    out = tmp_path / "out"
    args = ["--cache", str(cache_dir), "--device-report", str(device_report), "--out", str(out)]
    code = main([*args, "--no-compile"])
    assert code == 0
    text = (out / "performance_report.md").read_text()
    assert "| 0.02 measured (n=20) |" in text
    assert "| 0.03 measured | 1.50x measured |" in text
    assert "### Model vs measurement" in text and "0.02" in text
    _assert_png_has_content(out / "model_vs_measured.png")


def test_every_plot_is_a_drawn_png(cache_dir: Path, tmp_path: Path) -> None:
    trials = tmp_path / "trials.jsonl"
    write_trials(
        trials,
        TUNED_PROBLEM.kernel_key(ARCH),
        [
            {"number": 0, "status": "ok", "value_ms": 0.009, "kind": "model"},
            {"number": 1, "status": "spill", "value_ms": None},
            {"number": 2, "status": "ok", "value_ms": 0.006, "kind": "model"},
        ],
    )
    assert [r["number"] for r in load_trials(trials)[TUNED_PROBLEM.kernel_key(ARCH)]] == [0, 1, 2]
    report = build_report(
        _inputs(cache_dir, trials=load_trials(trials)), tmp_path / "out", oracle=_oracle()
    )
    names = sorted(p.name for p in report.plots)
    assert names == [
        "best_so_far.png",
        "roofline.png",
        "tier_distributions.png",
        "tier_timeline.png",
    ]
    for path in report.plots:
        _assert_png_has_content(path)
        assert f"]({path.name})" in report.path.read_text()
    assert "No model-vs-measured scatter: no measurements." in report.path.read_text()


def test_without_matplotlib_the_report_is_text_only_and_says_so(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    report = build_report(_inputs(cache_dir), tmp_path / "out", oracle=_oracle())
    assert not report.plots_available and report.plots == []
    assert list((tmp_path / "out").glob("*.png")) == []
    text = report.path.read_text()
    assert "matplotlib is not installed: this report is text only" in text
    assert "## Tuned kernels" in text and "### Speedups between tiers" in text


def test_entry_without_objective_is_listed_as_skipped(
    cache_dir: Path, tmp_path: Path, text_only: None
) -> None:
    KernelCache(cache_dir=cache_dir, read_only_dirs=()).put(
        "gemm.fp16.m64.n64.k64.sm_90", cubin=b"x", ptx=None, metadata={"arch": ARCH}
    )
    text = build_report(_inputs(cache_dir), tmp_path / "out", oracle=_oracle()).path.read_text()
    assert "- gemm.fp16.m64.n64.k64.sm_90: no tuning outcome in its metadata" in text


def test_calibrated_interval_covers_the_measured_pairs() -> None:
    pairs = [(1.0, 1.1), (2.0, 1.5), (1.0, 0.9), (4.0, 4.4), (3.0, 3.0), (1.0, 2.0)]
    interval = calibrate(pairs)
    errors = sorted(abs(math.log(t / m)) for m, t in pairs)
    assert interval.factor == pytest.approx(math.exp(np.quantile(errors, 0.9)))
    assert calibrate(pairs[:2]).factor == DEFAULT_FACTOR


def test_cli_errors_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    assert main(["--trace", str(missing), "--cache", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: trace") and "does not exist" in err and "\n" not in err
    assert main(["--cache", str(missing), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --cache {missing}: not a directory; pass a kernel cache"
    bad = tmp_path / "device.json"
    bad.write_text("{not json")
    assert (
        main(["--device-report", str(bad), "--cache", str(tmp_path), "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: device report {bad} is not JSON") and "\n" not in err


def test_same_shape_tuned_in_another_dtype_is_a_dtype_candidate(
    cache_dir: Path, tmp_path: Path, text_only: None
) -> None:
    bf16 = AttentionProblem(1, 2, 128, 128, 64, dtype="bf16")
    records = [_record(bf16, i, 2, ms) for i, ms in enumerate([5.0, 6.0, 7.0])]
    entries, _ = tuned_entries(KernelCache(cache_dir=cache_dir, read_only_dirs=()).entries())
    inputs = ReportInputs(entries=entries, records=records, trace_name="t")
    text = build_report(inputs, tmp_path / "out", oracle=_oracle()).path.read_text()
    default = get_family("attention").default_config(bf16, ARCH)
    gain = _model_ms(bf16, default) / _model_ms(bf16, TUNED)
    assert f"| 1 | dtype | attention bf16 1x2x128x128x64 | `{TUNED}` | {gain:.2f}x | 18 |" in text
    assert "the same shape in another dtype" in text


def test_bench_summary_without_its_checks_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "bench.json"
    summary.write_text(json.dumps({"consistency": [{"problem": "p", "tier": 2}]}))
    assert main(["--bench", str(summary), "--cache", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: bench summary {summary}: expected the JSON object")
    assert "max_abs_err" in err and "\n" not in err
