"""The one harness of the fresh-process benchmarks: a whole interpreter per round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def bench_fresh_process(
    benchmark: Any, child_code: str, args: Sequence[str], *, rounds: int, fields: Sequence[str]
) -> None:
    """Time `python -c child_code *args` per round; the child prints a JSON object of
    millisecond `fields`, whose medians go into the benchmark's extra_info."""
    samples: list[dict[str, float]] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run() -> None:
        out = subprocess.run(
            [sys.executable, "-c", child_code, *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(json.loads(out.stdout))

    benchmark.pedantic(run, rounds=rounds, iterations=1)
    for name in fields:
        values = sorted(s[name] for s in samples)
        benchmark.extra_info[f"median_{name}"] = round(values[len(values) // 2], 3)
