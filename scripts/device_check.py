"""The device check's stages, each run as its own process with its own time budget.

`scripts/device_check.sh` calls `main`; each stage runs as `device_check.py --stage NAME`
in a child process, so a hang, a device fault (which poisons a CUDA context) or a crash in
one stage is recorded in the report and the next stage still runs. Everything lands in $OUT:
device_report.json, device_report.md, measured_records.jsonl (autotune.calibrate's input),
gpu_tests.txt and stages.log. GPU code here is written against torch 2.x, cuda.core and
generator.device; `--dry-run` runs the stages that need no GPU (toolchain, compile, model)
and the report skeleton.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the packages sit at the repository root
    sys.path.insert(1, str(REPO))

import device_backward  # noqa: E402  (siblings in scripts/, on sys.path as the script's folder)
import device_hopper  # noqa: E402
import device_report  # noqa: E402
import device_stages  # noqa: E402
import device_tuning  # noqa: E402

# The issue's 8 minutes on an H100: the stages' caps below add up to it.
TOTAL_BUDGET_S = 480
# (stage, seconds on the GPU machine, seconds in a dry run, needs a GPU), in this order; later
# stages read earlier stages' results. A dry run compiles cold on a loaded CI machine (2 cores),
# so its budgets are caps for a hang, not estimates; on the device (16 cores) the compiles are
# mostly cache hits of earlier stages.
STAGES: tuple[tuple[str, int, int, bool], ...] = (
    ("toolchain", 25, 60, False),  # 7 s on an H100
    ("compile", 25, 150, False),  # 4 s
    ("gpu_tests", 90, 0, True),  # 76 s on an H100 (benchmarks compile cold)
    ("correctness", 40, 0, True),
    ("tune", 90, 0, True),
    ("timings", 50, 0, True),
    ("backward", 60, 0, True),
    ("hopper", 70, 120, False),  # dry run: compiles and models; 21 s + a ~30 s attention sweep
    ("model", 30, 240, False),
)
REPORT_FILES = (
    "device_report.json",
    "device_report.md",
    "measured_records.jsonl",
    "gpu_tests.txt",
    "stages.log",
)


def run_stage(name: str, work: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """Run one stage in this process and return its JSON-able result."""
    modules = (device_tuning, device_backward, device_hopper, device_stages)
    module = next((m for m in modules if hasattr(m, f"stage_{name}")), device_stages)
    function = getattr(module, f"stage_{name}")
    result: dict[str, Any] = function(work=work, out=out, dry_run=dry_run)
    return result


def _child(name: str, work: Path, out: Path, dry_run: bool, budget_s: float) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__)), "--stage", name]
    command += ["--work", str(work), "--out", str(out)] + (["--dry-run"] if dry_run else [])
    start = time.monotonic()
    log = out / "stages.log"
    with log.open("a") as sink:
        sink.write(f"\n===== {name} (budget {budget_s:.0f} s) =====\n")
        sink.flush()
        # A session of its own: on timeout the whole group goes (pytest, compile workers).
        child = subprocess.Popen(
            command, stdout=sink, stderr=sink, cwd=REPO, start_new_session=True
        )
        try:
            returncode = child.wait(timeout=budget_s)
            status = "ok" if returncode == 0 else f"failed (exit {returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            status = f"timeout after {budget_s:.0f} s"
    result_path = work / f"{name}.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return {"status": status, "seconds": round(time.monotonic() - start, 1), "result": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/device_check.sh")
    parser.add_argument("--dry-run", action="store_true", help="only what needs no GPU")
    parser.add_argument("--out", type=Path, required=True, help="where the report goes ($OUT)")
    parser.add_argument(
        "--budget-s",
        type=int,
        default=TOTAL_BUDGET_S,
        help=f"seconds for all GPU-machine stages together (default {TOTAL_BUDGET_S})",
    )
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage is not None:  # a child: run one stage, leave its result in --work
        work = args.work or args.out
        try:
            result = run_stage(args.stage, work, args.out, args.dry_run)
        except Exception as exc:
            traceback.print_exc()
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            result = {"error": f"{type(exc).__name__}: {first_line}"}
            (work / f"{args.stage}.json").write_text(json.dumps(result, default=str))
            return 1
        (work / f"{args.stage}.json").write_text(json.dumps(result, default=str, indent=1))
        return 0

    import tempfile

    start = time.monotonic()
    stages: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tessera-device-check-") as tmp:
        work = Path(tmp)
        for name, device_budget_s, dry_budget_s, needs_gpu in STAGES:
            budget_s = dry_budget_s if args.dry_run else device_budget_s
            if needs_gpu and args.dry_run:
                stages[name] = {"status": "skipped (dry run)", "seconds": 0.0, "result": {}}
                continue
            left = budget_s if args.dry_run else args.budget_s - (time.monotonic() - start)
            if left < 10:
                stages[name] = {"status": "skipped (time budget spent)", "seconds": 0.0}
                continue
            stages[name] = _child(name, work, args.out, args.dry_run, min(budget_s, left))
            print(f"[device_check] {name}: {stages[name]['status']} ({stages[name]['seconds']} s)")
    report = device_report.build_report(stages, dry_run=args.dry_run)
    report["wall_s"] = round(time.monotonic() - start, 1)
    (args.out / "device_report.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "device_report.md").write_text(device_report.report_markdown(report))
    print(f"[device_check] report in {args.out} after {report['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
