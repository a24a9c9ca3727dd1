"""Hotspot ranking, pattern analysis, task proposals and the `python -m autotune.hotspots` CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.hotspots import TraceRecord, load_trace, patterns, propose_tasks, rank
from tessera_core.types import AttentionProblem, GemmProblem

ROOT = Path(__file__).resolve().parents[2]


def _call(
    shape: tuple[int, ...],
    wall_ms: float,
    *,
    op: str = "attention",
    tier: int = 1,
    time_s: float = 0.0,
    dtype: str = "fp16",
    ok: bool = True,
) -> TraceRecord:
    return TraceRecord(
        time_s=time_s,
        event="call",
        op=op,
        dtype=dtype,
        shape=shape,
        causal=False,
        scale=None,
        tier=tier,
        wall_ms=wall_ms,
        ok=ok,
    )


BIG = (2, 4, 256, 256, 64)
SMALL = (1, 2, 64, 64, 64)
GEMM = (128, 128, 64)


def _records() -> list[TraceRecord]:
    records = [_call(BIG, 10.0, time_s=i, tier=1 if i < 2 else 2) for i in range(4)]
    records += [_call(SMALL, 1.0, time_s=10 + i) for i in range(20)]
    records += [_call(GEMM, 100.0, op="gemm", time_s=50)]  # one call: under min_count
    records += [_call(SMALL, 500.0, ok=False)]  # failed calls never count
    records += [
        TraceRecord(
            time_s=1,
            event="promote",
            op="attention",
            dtype="fp16",
            shape=BIG,
            causal=False,
            scale=None,
            tier=2,
            wall_ms=0.0,
        )
    ]
    return records


def test_rank_orders_by_cumulative_time_under_the_criteria() -> None:
    hotspots = rank(_records(), min_count=2)
    assert [h.problem for h in hotspots] == [
        AttentionProblem(2, 4, 256, 256, 64),
        AttentionProblem(1, 2, 64, 64, 64),
    ]
    big, small = hotspots
    assert (big.count, big.total_ms, big.mean_ms, big.tiers, big.last_tier) == (
        4,
        40.0,
        10.0,
        {1: 2, 2: 2},
        2,
    )
    assert small.count == 20 and small.total_ms == pytest.approx(20.0)
    assert big.share == pytest.approx(40.0 / 160.0)  # the gemm's 100 ms is in the total
    assert next(h.problem for h in rank(_records(), min_count=1)) == GemmProblem(128, 128, 64)
    assert [h.count for h in rank(_records(), min_count=2, min_time_ms=25.0)] == [4]


def test_patterns_report_shape_and_dtype_consistency() -> None:
    records = [*_records(), _call(SMALL, 1.0, dtype="bf16")]
    by_op = {p.op: p for p in patterns(records)}
    attention = by_op["attention"]
    assert (attention.calls, attention.shapes, attention.dtypes) == (25, 2, 2)
    assert attention.top_shape_share == pytest.approx(21 / 25)
    assert attention.top_dtype_share == pytest.approx(24 / 25)
    assert attention.consistent
    varied = patterns([_call(BIG, 1.0), _call(SMALL, 1.0)])[0]
    assert not varied.consistent and "varied" in varied.verdict()


def test_propose_tasks_takes_the_top_n() -> None:
    hotspots = rank(_records(), min_count=2)
    assert propose_tasks(hotspots, 1) == [AttentionProblem(2, 4, 256, 256, 64)]
    assert len(propose_tasks(hotspots, 10)) == 2
    at_tier_3 = rank([_call(BIG, 5.0, tier=3), _call(BIG, 5.0, tier=3), *_records()[4:]])
    assert propose_tasks(at_tier_3, 5, skip_specialized=True) == [
        AttentionProblem(1, 2, 64, 64, 64)
    ]
    with pytest.raises(ValueError, match="top=-1"):
        propose_tasks(hotspots, -1)


def test_cli_prints_hotspots_patterns_and_tune_commands(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in _records()))
    assert load_trace(path) == _records()
    result = subprocess.run(
        [sys.executable, "-m", "autotune.hotspots", str(path), "--top", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "attention fp16 2x4x256x256x64" in out and "2 hotspot(s)" in out
    assert "python -m generator.tune --op attention --shape 2x4x256x256x64 --dtype fp16" in out
    assert "python -m generator.tune --op attention --shape 1x2x64x64x64" not in out
    assert "consistent shapes" in out


def test_cli_reports_a_missing_trace(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "autotune.hotspots", str(tmp_path / "none.jsonl")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_load_trace_skips_lines_that_parse_but_describe_no_problem(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    good = _call((1, 2, 64, 64, 64), 1.0)
    bad_shape = json.loads(good.to_json()) | {"shape": [1, 2, 64]}
    bad_dtype = json.loads(good.to_json()) | {"dtype": "fp32"}
    bad_event = json.loads(good.to_json()) | {"event": "launch"}
    lines = [good.to_json(), *(json.dumps(d) for d in (bad_shape, bad_dtype, bad_event)), "[1]"]
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe{torn\n" + good.to_json().encode())
    assert load_trace(path) == [good, good]
    assert len(rank(load_trace(path))) == 1


def test_cli_exit_status_2_for_a_directory_or_a_negative_top(tmp_path: Path) -> None:
    for args in ([str(tmp_path)], [str(tmp_path / "t.jsonl"), "--top", "-1"]):
        (tmp_path / "t.jsonl").write_text(_call((8, 8, 8), 1.0, op="gemm").to_json() + "\n")
        result = subprocess.run(
            [sys.executable, "-m", "autotune.hotspots", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "is not a file" in result.stderr or "--top: '-1'" in result.stderr
        assert len(result.stderr.splitlines()) == 1


def _hotspots_cli(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autotune.hotspots", *args],
        cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120,
    )  # fmt: skip


def _hostile_trace(path: Path) -> Path:
    """Two good calls and six bad lines: nested 100000 deep, huge numbers, wrong types."""
    good = _call((8, 8, 8), 1.0, op="gemm").to_json()
    fields = json.loads(good)
    path.write_text(
        "\n".join(
            [
                good,
                "[" * 100_000,
                '{"a":' * 100_000 + "1" + "}" * 100_000,
                json.dumps(fields | {"shape": [1e400, 8, 8]}),
                json.dumps(fields | {"wall_ms": float("nan")}),
                json.dumps(fields | {"scale": [1, 2]}),
                json.dumps(fields | {"config": "block_m"}),
                good,
            ]
        )
        + "\n"
    )
    return path


def test_a_hostile_trace_is_ranked_from_its_good_lines_with_one_counted_warning(
    tmp_path: Path,
) -> None:
    path = _hostile_trace(tmp_path / "trace.jsonl")
    assert len(load_trace(path)) == 2
    result = _hotspots_cli(str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"WARNING tessera.autotune.hotspots: trace {path}: skipped 6 malformed line(s)"
    ]
    assert "2 successful call(s), 1 hotspot(s)" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--min-count", "0"), "--min-count: '0': expected an integer >= 1"),
        (("--min-time-ms", "nan"), "--min-time-ms: 'nan': expected a finite number >= 0"),
        (("--top", "x"), "--top: 'x': expected an integer >= 0"),
    ],
)
def test_cli_bad_options_are_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    (tmp_path / "t.jsonl").write_text(_call((8, 8, 8), 1.0, op="gemm").to_json() + "\n")
    result = _hotspots_cli(str(tmp_path / "t.jsonl"), *args)
    assert result.returncode == 2 and needle in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_reader_that_leaves_early_gets_no_broken_pipe_traceback(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text(_call((8, 8, 8), 1.0, op="gemm").to_json() + "\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -1` that has already exited: every write fails with EPIPE
    try:
        result = _hotspots_cli(str(tmp_path / "t.jsonl"), stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""


def test_a_transposed_gemm_layout_travels_through_the_trace_to_its_tune_command() -> None:
    from autotune.hotspots import tune_command

    record = TraceRecord(
        time_s=1.0, event="call", op="gemm", dtype="bf16", shape=(64, 32, 16), causal=False,
        scale=None, tier=1, wall_ms=1.0, variant={"layout": "tn"},
    )  # fmt: skip
    again = TraceRecord.from_dict(json.loads(record.to_json()))
    assert again.problem() == GemmProblem(64, 32, 16, dtype="bf16", layout="tn")
    assert tune_command(again.problem()) == (
        "python -m generator.tune --op gemm --shape 64x32x16 --dtype bf16 --layout tn"
    )
    nn = dataclasses.replace(record, variant=None)
    assert "variant" not in json.loads(nn.to_json())  # NN lines read as before layouts existed
