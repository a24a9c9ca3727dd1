"""Replay inputs and outputs: plain/gzip JSON, CSV, unknown kernels, errors, --json, --jobs."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from autotune.recorded import RecordError, load_space
from autotune.replay import PROG, combined_ranking, main, replay_files, spaces_dir
from tessera_core.cli import run_cli

PARAMS = {"bx": [16, 32, 64, 128], "by": [1, 2, 4], "unroll": [0, 1]}


def _time(bx: int, by: int, unroll: int) -> float:
    return abs(bx - 64) / 16 + abs(by - 2) + 0.5 * unroll + 1.0


def _kernel_tuner_file(path: Path, *, kernel: str = "toy_kernel", gz: bool = False) -> Path:
    cache = {}
    for bx in PARAMS["bx"]:
        for by in PARAMS["by"]:
            for unroll in PARAMS["unroll"]:
                if bx * by > 256:  # excluded by the toy's restriction: absent, like Kernel Tuner
                    continue
                t: object = _time(bx, by, unroll)
                if (bx, by, unroll) == (16, 1, 1):
                    t = "CompilationFailedConfig"
                cache[f"{bx},{by},{unroll}"] = {"bx": bx, "by": by, "unroll": unroll, "time": t}
    data = {
        "kernel_name": kernel,
        "tune_params_keys": list(PARAMS),
        "tune_params": PARAMS,
        "cache": cache,
    }
    text = json.dumps(data)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_unknown_kernel_valid_set_is_the_recorded_configurations(tmp_path: Path) -> None:
    space = load_space(_kernel_tuner_file(tmp_path / "toy.json"))
    assert not space.restrictions_known
    assert set(space.valid_points) == set(space.times_ms)
    assert (128, 4, 0) not in space.valid_points  # never recorded: excluded
    assert space.space.violations({"bx": 128, "by": 4, "unroll": 0})
    assert space.time_ms((16, 1, 1)) is None  # failed configuration
    assert space.optimum_ms == 1.0
    assert space.ranking()[0] == (64, 2, 0) and space.ranking()[-1] == (16, 1, 1)


def test_plain_and_gzipped_json_and_csv_load_the_same_space(tmp_path: Path) -> None:
    plain = load_space(_kernel_tuner_file(tmp_path / "toy.json"))
    gzipped = load_space(_kernel_tuner_file(tmp_path / "toy.json.gz", gz=True))
    lines = ["bx,by,unroll,time"]
    for (bx, by, unroll), t in plain.times_ms.items():
        lines.append(f"{bx},{by},{unroll},{'' if t is None else t}")
    (tmp_path / "toy.csv").write_text("\n".join(lines) + "\n")
    table = load_space(tmp_path / "toy.csv")
    for other in (gzipped, table):
        assert other.times_ms == plain.times_ms
        assert sorted(other.valid_points) == sorted(plain.valid_points)
    assert table.space.params == (("bx", (16, 32, 64, 128)), ("by", (1, 2, 4)), ("unroll", (0, 1)))


def test_a_plain_json_copy_of_a_shared_space_replays_identically(tmp_path: Path) -> None:
    path = spaces_dir() / "convolution_A4000.json.gz"
    if not path.exists():
        pytest.skip(f"recorded space {path} not present (set TESSERA_TUNING_SPACES_DIR)")
    plain = tmp_path / "convolution_A4000.json"
    with gzip.open(path, "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    a, _ = replay_files([path], budgets=[8], seeds=2, strategies=["gp", "random"])
    b, _ = replay_files([plain], budgets=[8], seeds=2, strategies=["gp", "random"])
    assert [(r.space, r.strategy, r.mean, r.std) for r in a] == [
        (r.space, r.strategy, r.mean, r.std) for r in b
    ]
    assert load_space(plain).restrictions_known


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('{"kernel_name": "k"}', "not a Kernel Tuner cache file"),
        (b"\x1f\x8b\x08garbage", "not a readable gzip"),
        ("a,b\n1,2\n", "header row with one column per parameter plus 'time'"),
        ("a,time\n1,2\n3\n", "line 3 has 1 fields, expected 2"),
        ("a,time\n1,slow\n", "no configuration with a numeric time"),
    ],
)
def test_missing_or_malformed_files_are_one_line_errors_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, message: str
) -> None:
    suffix = (
        ".csv" if isinstance(content, str) and "," in content and "{" not in content else ".json"
    )
    path = tmp_path / f"space{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(RecordError, match=message):
        load_space(path)
    assert run_cli(main, [str(path), "--budgets", "2", "--seeds", "1"], prog=PROG) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("python -m autotune.replay: error: ") and message in err and "\n" not in err
    )


def test_json_rows_carry_the_documented_fields_and_jobs_do_not_change_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _kernel_tuner_file(tmp_path / "toy.json")
    args = [str(path), "--budgets", "5", "12", "--seeds", "3", "--json"]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main([*args, "--jobs", "2"]) == 0
    parallel = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for row in (*rows, *parallel):
        row.pop("seconds")
    assert parallel == rows
    fields = {"space", "budget", "strategy", "mean", "std", "seeds", "evals_to_90", "evals_to_95"}
    assert all(fields <= set(row) for row in rows)
    assert [(r["budget"], r["strategy"]) for r in rows] == [
        (5, "gp"),
        (5, "random"),
        (12, "gp"),
        (12, "random"),
    ]
    for row in rows:
        assert 0.0 < row["mean"] <= 1.0 and row["seeds"] == 3
        if row["evals_to_95"] is not None:
            assert row["evals_to_90"] <= row["evals_to_95"] <= row["budget"]


def test_plot_writes_a_png_of_the_curves(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the [plots] extra is not installed")
    path = _kernel_tuner_file(tmp_path / "toy.json")
    png = tmp_path / "curves.png"
    assert main([str(path), "--budgets", "6", "--seeds", "2", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_warm_start_from_other_records_ranks_by_mean_slowdown(tmp_path: Path) -> None:
    a = load_space(_kernel_tuner_file(tmp_path / "a.json"))
    ranking = combined_ranking([a, a])
    assert ranking[0] == (64, 2, 0)
    b_path = _kernel_tuner_file(tmp_path / "b.json")
    rows, _ = replay_files(
        [tmp_path / "a.json", b_path], budgets=[3], seeds=2, strategies=["gp"], warm_start="others"
    )
    # The prior's best is the optimum of these identical spaces: found at the first evaluation.
    assert [r.strategy for r in rows] == ["gp+warm", "gp+warm"]
    assert all(r.mean == 1.0 and r.evals_to_95 == 1 for r in rows)


def test_warm_start_records_load_from_spaces_job_output_and_tuning_records(tmp_path: Path) -> None:
    from autotune.recorded import load_ranking

    assert load_ranking(_kernel_tuner_file(tmp_path / "toy.json"))[0] == {
        "bx": 64,
        "by": 2,
        "unroll": 0,
    }
    fast, slow = {"block_m": 64}, {"block_m": 128}
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps({"top": [{"config": slow, "time_ms": 2.0}, {"config": fast, "time_ms": 1.0}]})
    )
    assert load_ranking(job) == [fast, slow]
    records = tmp_path / "records.jsonl"
    records.write_text(
        json.dumps({"config": slow, "value_ms": 3.0})
        + "\n"
        + json.dumps({"config": {"block_m": 16}, "value_ms": None, "status": "spill"})
        + "\n"
        + json.dumps({"config": fast, "value_ms": 0.5})
        + "\n"
    )
    assert load_ranking(records) == [fast, slow]  # records without a time are skipped
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(RecordError, match="no record with a config and a value_ms/time_ms"):
        load_ranking(tmp_path / "empty.json")


def test_named_candidates_replay_side_by_side(tmp_path: Path, capsys) -> None:
    path = _kernel_tuner_file(tmp_path / "toy.json")
    names = ["gp", "gp-forest", "gp-lhs", "random"]
    rc = main([str(path), "--budgets", "6", "--seeds", "2", "--json", "--strategies", *names])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["strategy"] for r in rows] == names
    assert all(0.0 < r["mean"] <= 1.0 and r["seeds"] == 2 for r in rows)
