"""scripts/fa2_grid_summary.py: counts per test, axis value and masked skip reason, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase name="test_fa2_forward_full[dtype=fp16-d=64-seq=113x203]"/>
<testcase name="test_fa2_forward_full[dtype=bf16-d=128-seq=113x203]">
  <skipped message="Runtime.attention refuses it: head_dim=128 is not supported"/>
</testcase>
<testcase name="test_fa2_forward_full[dtype=bf16-d=32-seq=1x147]">
  <skipped message="Runtime.attention refuses it: head_dim=32 is not supported"/>
</testcase>
<testcase name="test_fa2_varlen_full[dtype=fp16-d=64-seq=1x147]">
  <failure message="AssertionError: max|ours - float64| = 1e-2&#10;second line">trace</failure>
</testcase>
<testcase name="test_unrelated[x=1]"/>
</testsuite></testsuites>
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/fa2_grid_summary.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_counts_per_test_axis_and_masked_reason(tmp_path: Path) -> None:
    report = tmp_path / "grid.xml"
    report.write_text(REPORT)
    done = _run(str(report), "--json")
    assert done.returncode == 1, done.stderr  # a cell failed
    summary = json.loads(done.stdout)
    assert summary["totals"] == {"passed": 1, "failed": 1, "skipped": 2}  # test_other ignored
    assert summary["tests"]["test_fa2_varlen_full"] == {"passed": 0, "failed": 1, "skipped": 0}
    assert list(summary["axes"]["d"]) == ["32", "64", "128"]  # natural order
    assert summary["axes"]["dtype"]["bf16"] == {"passed": 0, "failed": 0, "skipped": 2}
    (reason,) = summary["skip_reasons"]
    assert reason["count"] == 2
    assert reason["reason"] == "Runtime.attention refuses it: head_dim=N is not supported"
    assert summary["failures"] == [
        {
            "cell": "test_fa2_varlen_full[dtype=fp16-d=64-seq=1x147]",
            "message": "AssertionError: max|ours - float64| = 1e-2",
        }
    ]
    text = _run(str(report)).stdout
    assert text.startswith("FA2 grid: 4 cells: 1 passed, 1 failed, 2 skipped")
    twice = json.loads(_run(str(report), str(report), "--json").stdout)  # several runs add up
    assert twice["totals"] == {"passed": 2, "failed": 2, "skipped": 4}


def test_all_passed_or_skipped_exits_zero(tmp_path: Path) -> None:
    report = tmp_path / "grid.xml"
    report.write_text(REPORT.replace("<failure", "<skipped").replace("</failure>", "</skipped>"))
    assert _run(str(report)).returncode == 0


def test_an_unreadable_report_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "grid.xml"
    bad.write_text("not xml")
    for path in (bad, tmp_path / "missing.xml"):
        done = _run(str(path))
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1 and path.name in done.stderr
