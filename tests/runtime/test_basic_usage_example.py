"""Smoke test of examples/basic_usage.py: it runs, prints stats and promotes past tier 1."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_basic_usage_example_runs(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "basic_usage.py"),
            "--calls",
            "12",
            "--every",
            "4",
            "--shape",
            "1x2x64x64",
            "--trials",
            "2",
            "--trace",
            str(trace),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"call   12: tier [23]", out)
    assert "promote  -> tier 2" in out and "12 call(s) on emulator" in out
    assert "proposed tuning tasks" in out
    assert len(trace.read_text().splitlines()) >= 12
