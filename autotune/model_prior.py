"""`python -m autotune.model_prior RECORDS...`: evaluations the cost model saves as a prescreen.

The question (issue 13, item 4): on a GPU, if the calibrated cost model ranks the candidates
and only the most promising are measured (top-k), how many measurements are saved at equal
quality? Measured records (autotune.calibrate's format, one line per timed configuration, as
the device check writes them) answer it after the fact: per kernel (arch + problem), the
configurations are put in the model's order and we count the measurements until the best so
far is within `quality` of the best measured time (t_best / t_found >= quality). That count is
the smallest top-k that reaches the quality; the saving is against measuring all of them and
against measuring in a random order (expected count, closed form: with m of n configurations
good enough, a random order needs (n + 1) / (m + 1) measurements on average).

The model is calibrated leave-one-kernel-out by default: the factors ranking a kernel are
fitted to the other kernels' records of the same arch only (with too few of them, the stored
calibration is used and the row says so), so no kernel is ranked by a model fitted to its own
timings. Successive halving would need a cheaper measurement fidelity than the records hold
(one timing per configuration); it is not estimated here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autotune.calibrate import MIN_RECORDS, MeasuredRecord, fit_arch, load_records
from autotune.cost_model import Factors, calibrated_factors
from tessera_core.cli import ArgumentParser, run_cli
from tessera_core.errors import UsageError

PROG = "python -m autotune.model_prior"
DEFAULT_QUALITY = 1.0  # equal quality: the measured best itself


@dataclass(frozen=True)
class PrescreenRow:
    """One kernel: measurements to reach `quality` in the model's order and at random."""

    kernel: str
    arch: str
    candidates: int  # configurations measured for this kernel (all of them, no prescreen)
    quality: float
    model_order: int  # smallest top-k of the model's ranking that reaches the quality
    random_order: float  # expected measurements of a random order to reach it
    calibration: str  # "other kernels" (leave-one-kernel-out) or "stored"

    @property
    def saved(self) -> int:
        """Measurements saved against measuring every candidate."""
        return self.candidates - self.model_order


def kernel_name(record: MeasuredRecord) -> str:
    return record.problem.kernel_key(record.arch)


def evaluations_to_quality(
    model_ms: Sequence[float], measured_ms: Sequence[float], quality: float
) -> int:
    """Measurements, taken in increasing `model_ms` order, until t_best / t_found >= quality.

    Ties in the model's order are broken towards the slower measured time (the pessimistic
    count), so an uninformative model is not credited with luck.
    """
    if not 0.0 < quality <= 1.0:
        raise ValueError(f"quality={quality!r}: expected a fraction in (0, 1]")
    if len(model_ms) != len(measured_ms) or not len(model_ms):
        raise ValueError("model_ms and measured_ms: expected two equally long, non-empty lists")
    measured = np.asarray(measured_ms, dtype=np.float64)
    order = np.lexsort((-measured, np.asarray(model_ms, dtype=np.float64)))
    target = measured.min() / quality
    return int(np.argmax(measured[order] <= target * (1 + 1e-12))) + 1


def random_order_expectation(measured_ms: Sequence[float], quality: float) -> float:
    """Expected measurements of a uniformly random order to reach `quality`: (n+1)/(m+1)."""
    measured = np.asarray(measured_ms, dtype=np.float64)
    good = int((measured <= measured.min() / quality * (1 + 1e-12)).sum())
    return (len(measured) + 1) / (good + 1)


def _factors_for(kernel: str, by_kernel: dict[str, list[MeasuredRecord]]) -> tuple[Factors, str]:
    arch = by_kernel[kernel][0].arch
    others = [
        r for name, group in by_kernel.items() if name != kernel for r in group if r.arch == arch
    ]
    if len(others) < MIN_RECORDS:
        return calibrated_factors(arch), "stored"
    return fit_arch(others).factors, "other kernels"


def prescreen_rows(
    records: Sequence[MeasuredRecord], *, quality: float = DEFAULT_QUALITY, stored: bool = False
) -> list[PrescreenRow]:
    """One row per kernel of `records` (see the module docstring).

    stored: rank with the stored calibration of each arch instead of leave-one-kernel-out
    (optimistic when the stored factors were fitted to these very records).
    """
    by_kernel: dict[str, list[MeasuredRecord]] = {}
    for record in records:
        by_kernel.setdefault(kernel_name(record), []).append(record)
    rows = []
    for kernel, group in sorted(by_kernel.items()):
        if stored:
            factors, source = calibrated_factors(group[0].arch), "stored"
        else:
            factors, source = _factors_for(kernel, by_kernel)
        model = [r.model_ms(factors) for r in group]
        measured = [r.time_ms for r in group]
        rows.append(
            PrescreenRow(
                kernel=kernel,
                arch=group[0].arch,
                candidates=len(group),
                quality=quality,
                model_order=evaluations_to_quality(model, measured, quality),
                random_order=random_order_expectation(measured, quality),
                calibration=source,
            )
        )
    return rows


def format_rows(rows: Sequence[PrescreenRow]) -> str:
    lines = [
        "| kernel | candidates | quality | top-k needed (model order) | random order (mean) | "
        "saved vs all | saved vs random | calibration |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.kernel} | {r.candidates} | {r.quality:g} | {r.model_order} | "
            f"{r.random_order:.1f} | {r.saved} | {r.random_order - r.model_order:+.1f} | "
            f"{r.calibration} |"
        )
    for quality in sorted({r.quality for r in rows}, reverse=True):
        of = [r for r in rows if r.quality == quality]
        total = sum(r.candidates for r in of)
        needed = sum(r.model_order for r in of)
        rand = sum(r.random_order for r in of)
        lines.append(
            f"| all kernels | {total} | {quality:g} | {needed} | {rand:.1f} | {total - needed} "
            f"({(total - needed) / total:.0%}) | {rand - needed:+.1f} | |"
        )
    return "\n".join(lines)


def _quality(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fraction in (0, 1], such as 0.95")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, metavar="RECORDS.jsonl")
    parser.add_argument(
        "--quality",
        type=_quality,
        nargs="+",
        default=[DEFAULT_QUALITY],
        help="fractions of the best measured time to reach (default 1.0: the best itself)",
    )
    parser.add_argument(
        "--stored",
        action="store_true",
        help="rank with the stored calibration instead of leave-one-kernel-out",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    args = parser.parse_args(argv)
    try:
        records = load_records(args.records)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = [
        row
        for quality in args.quality
        for row in prescreen_rows(records, quality=quality, stored=args.stored)
    ]
    if args.json:
        for row in rows:
            print(json.dumps({**asdict(row), "saved": row.saved}, sort_keys=True))
    else:
        print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
