"""Smoke test of examples/basic_usage.py: it runs, prints stats and promotes past tier 1."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tessera_core.cli import run_cli

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


def _run_cli_of_the_example(argv: list[str]) -> int:
    """The exit status `python examples/basic_usage.py ARGV` would have, run in-process."""
    spec = importlib.util.spec_from_file_location(
        "basic_usage", ROOT / "examples" / "basic_usage.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return run_cli(module.main, argv, prog=module.PROG)
    except SystemExit as exit_:  # argparse's own errors
        return int(exit_.code or 0)


@pytest.mark.parametrize(
    "args",
    [
        ["--calls", "0"],
        ["--every", "0"],
        ["--trials", "-1"],
        ["--shape", "1x4x128"],
        ["--shape", "1x4x0x64"],
        ["--shape", "1x1x64x76"],
        ["--cache-dir", "/proc/tessera-cannot-create"],
        ["--trace", "/proc/tessera-cannot-create/trace.jsonl"],
    ],
)
def test_basic_usage_example_refuses_bad_arguments_with_exit_status_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status = _run_cli_of_the_example([*args, "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2
    assert args[0] in err and len(err.splitlines()) == 1, err
