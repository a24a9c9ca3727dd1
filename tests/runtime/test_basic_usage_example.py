"""Smoke test of examples/basic_usage.py: it runs, prints stats and promotes past tier 1."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

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


def _example_main() -> Callable[[list[str]], int]:
    spec = importlib.util.spec_from_file_location(
        "basic_usage", ROOT / "examples" / "basic_usage.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "args", [["--calls", "0"], ["--every", "0"], ["--trials", "-1"], ["--shape", "1x4x128"]]
)
def test_basic_usage_example_refuses_bad_arguments_with_exit_status_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _example_main()([*args, "--device", "cpu"])
    assert info.value.code == 2
    assert args[0] in capsys.readouterr().err
