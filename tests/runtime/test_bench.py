"""`python -m runtime.bench --quick` on the emulator: trace, trials and summary for the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.hotspots import load_trace
from autotune.report import build_report, plots
from autotune.report.__main__ import main as report_main
from autotune.report.build import ReportInputs
from autotune.report.inputs import load_bench_summary, load_trials, tuned_entries
from autotune.report.prediction import ModelOracle
from cache.store import KernelCache
from runtime.bench import SETS, BenchSettings, main, run_bench


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    settings = BenchSettings(
        out_dir=out, scale="quick", sets=("small",), warmup=1, repeats=3, trials=1
    )
    run_bench(settings, log=lambda line: None)
    return out


def test_quick_bench_traces_every_tier_of_the_set(bench_dir: Path) -> None:
    (problem,) = SETS["quick"]["small"]
    calls = [r for r in load_trace(bench_dir / "trace.jsonl") if r.event == "call"]
    # Interleaved, the starting tier rotating each round: load bursts hit every tier alike.
    assert [r.tier for r in calls] == [1, 2, 3, 2, 3, 1, 3, 1, 2]
    assert {r.problem() for r in calls} == {problem}
    assert all(r.ok and r.wall_ms > 0 for r in calls)
    tier3 = {r.kernel_key for r in calls if r.tier == 3}
    assert tier3 == {problem.kernel_key("sm_90")}


def test_quick_bench_summary_checks_consistency_and_keeps_trials(bench_dir: Path) -> None:
    summary = load_bench_summary(bench_dir / "bench.json")
    assert summary["scale"] == "quick" and summary["device"] == "emulator"
    assert summary["skipped"] == []
    assert [(c["tier"], c["ok"]) for c in summary["consistency"]] == [(2, True), (3, True)]
    for check in summary["consistency"]:
        assert 0 <= check["rel_err"] <= check["tolerance"]
    (problem,) = SETS["quick"]["small"]
    trials = load_trials(bench_dir / "trials.jsonl")
    assert list(trials) == [problem.kernel_key("sm_90")]
    assert any(t["status"] == "ok" for t in trials[problem.kernel_key("sm_90")])


def test_report_reads_the_bench_output(bench_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "pyplot", lambda: None)
    entries, skipped = tuned_entries(
        KernelCache(cache_dir=bench_dir / "kernels", read_only_dirs=()).entries()
    )
    inputs = ReportInputs(
        entries=entries,
        skipped=skipped,
        records=load_trace(bench_dir / "trace.jsonl"),
        trace_name="trace.jsonl",
        bench=load_bench_summary(bench_dir / "bench.json"),
    )
    text = build_report(inputs, bench_dir / "report", oracle=ModelOracle(compile=False)).path
    body = text.read_text()
    speedups = body.split("### Speedups between tiers")[1]
    for tier, base in ((2, 1), (3, 1), (3, 2)):
        assert f"| attention fp16 1x1x32x32x32 | {tier} | {base} | " in speedups
    consistency = body.split("### Cross-tier consistency")[1].split("##")[0]
    assert consistency.count("| ok |") == 2


def test_report_cli_finds_the_trace_through_the_bench_summary(
    bench_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "pyplot", lambda: None)
    out = bench_dir / "cli-report"
    args = ["--bench", str(bench_dir / "bench.json"), "--cache", str(bench_dir / "kernels")]
    assert report_main([*args, "--no-compile", "--out", str(out)]) == 0
    text = (out / "performance_report.md").read_text()
    assert "9 successful call(s)" in text
    assert f"- trials `{bench_dir / 'trials.jsonl'}` (1 tuning runs)" in text
    # Two summaries merge: both traces' calls, both consistency lists.
    twice = bench_dir / "cli-report-twice"
    assert report_main([*args, *args[:2], "--no-compile", "--out", str(twice)]) == 0
    text = (twice / "performance_report.md").read_text()
    assert "18 successful call(s)" in text
    assert text.split("### Cross-tier consistency")[1].split("##")[0].count("| ok |") == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sets", "tiny"], "sets=['tiny']: expected names from small"),
        (["--tiers", "2,3"], "tiers=[2, 3]: expected 1 and any of 2, 3"),
        (["--tiers", "one"], "--tiers 'one': expected comma-separated tiers"),
        (["--repeats", "0"], "--repeats"),
        (["--quick", "--full"], "--quick and --full: choose one scale"),
    ],
)
def test_bench_cli_rejects_bad_arguments_with_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "trace.jsonl").exists()


def test_bench_summary_is_json_with_the_sets(bench_dir: Path) -> None:
    summary = json.loads((bench_dir / "bench.json").read_text())
    assert summary["sets"] == {"small": ["attention fp16 1x1x32x32x32"]}
    assert (summary["warmup"], summary["repeats"]) == (1, 3)


def test_bench_cli_runs_tier_1_and_prints_the_report_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--quick", "--sets", "small,mixed", "--tiers", "1", "--repeats", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"python -m autotune.report --bench {tmp_path / 'bench.json'}" in out
    calls = [r for r in load_trace(tmp_path / "trace.jsonl") if r.event == "call"]
    assert len(calls) == 4 and {r.dtype for r in calls} == {"fp16", "bf16"}
