"""`python -m autotune.calibrate RECORDS...`: fit the cost model's efficiency factors to timings.

A record file is JSON lines, one measured trial a line (scripts/device_check.sh writes them;
`measured_record` builds one):

    {"kind": "measured", "arch": "sm_90", "time_ms": 0.52,
     "problem": {"op": "attention", "batch": 8, ...},        # Problem.to_dict()
     "config": {"block_m": 128, ..., "q_in_regs": 0},          # TileConfig.to_dict()
     "resources": {"registers": 168, "static_smem_bytes": 0,
                   "spill_store_bytes": 0, "spill_load_bytes": 0},
     "dynamic_smem_bytes": 55296,
     "main_loop_sass_counts": {"HMMA": 128, ...} | null}     # generator.sass; null: none

Blank lines and lines starting with '#' are skipped. Per arch, the fit minimises the squared
log ratio model/measured over the log factors (Levenberg-Marquardt on a finite-difference
Jacobian, Huber-weighted so a few wild measurements do not steer it, with a light pull of
every factor towards 1 so a factor the records cannot see stays put). It reports Spearman's
rank correlation and the median |log ratio| before (uncalibrated factors, all 1.0) and after,
and with --write stores the factors in tessera_core/calibration.json, where the model reads
them (autotune.cost_model.calibrated_factors).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.cost_model import FACTOR_NAMES, Factors, estimate
from tessera_core.cli import ArgumentParser, run_cli
from tessera_core.errors import TesseraError
from tessera_core.hardware import ARCHS, CALIBRATION_PATH
from tessera_core.types import Problem, TileConfig, problem_from_dict

EXIT_USAGE = 2
RESOURCE_FIELDS = ("registers", "static_smem_bytes", "spill_store_bytes", "spill_load_bytes")
MIN_RECORDS = 3  # per arch: fewer cannot say anything about a rank correlation
RIDGE = 1e-3  # pull of each log factor towards 0 (factor 1)
HUBER_DELTA = 0.2  # |log ratio| beyond which a residual counts linearly, not squared
MAX_ITERATIONS = 60
STEP = 1e-3  # finite-difference step in log-factor space


@dataclass(frozen=True)
class Resources:
    """ptxas resources as a record stores them (autotune.cost_model.ResourceUsage)."""

    registers: int
    static_smem_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int


@dataclass(frozen=True)
class MeasuredRecord:
    """One measured trial: what ran, where, how long it took, and what the model needs."""

    problem: Problem
    config: TileConfig
    arch: str
    time_ms: float
    resources: Resources
    dynamic_smem_bytes: int
    loop_counts: Mapping[str, int] | None

    def model_ms(self, factors: Factors) -> float:
        return estimate(
            self.problem,
            self.config,
            self.resources,
            dynamic_smem_bytes=self.dynamic_smem_bytes,
            arch=self.arch,
            loop_counts=self.loop_counts,
            factors=factors,
        ).time_ms


def measured_record(
    problem: Problem,
    config: TileConfig,
    *,
    arch: str,
    time_ms: float,
    resources: Any,
    dynamic_smem_bytes: int,
    loop_counts: Mapping[str, int] | None,
) -> dict[str, Any]:
    """The JSON object of one record line (the format in this module's docstring)."""
    return {
        "kind": "measured",
        "arch": arch,
        "time_ms": float(time_ms),
        "problem": problem.to_dict(),
        "config": config.to_dict(),
        "resources": {name: int(getattr(resources, name)) for name in RESOURCE_FIELDS},
        "dynamic_smem_bytes": int(dynamic_smem_bytes),
        "main_loop_sass_counts": dict(loop_counts) if loop_counts else None,
    }


def _parse(data: Any) -> MeasuredRecord:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    if data.get("kind", "measured") != "measured":
        raise ValueError(f"kind={data.get('kind')!r}: only 'measured' records calibrate")
    missing = [k for k in ("arch", "time_ms", "problem", "config", "resources") if k not in data]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if data["arch"] not in ARCHS:
        raise ValueError(f"arch={data['arch']!r}: expected one of {', '.join(sorted(ARCHS))}")
    time_ms = data["time_ms"]
    if not isinstance(time_ms, (int, float)) or not time_ms > 0:
        raise ValueError(f"time_ms={time_ms!r}: expected a positive number of milliseconds")
    problem = problem_from_dict(dict(data["problem"]))
    config = TileConfig.from_dict(data["config"])
    res = data["resources"]
    absent = [name for name in RESOURCE_FIELDS if name not in res]
    if absent:
        raise ValueError(f"resources lack {', '.join(absent)}")
    counts = data.get("main_loop_sass_counts")
    if counts is not None and not isinstance(counts, dict):
        raise ValueError("main_loop_sass_counts: expected an object of opcode counts or null")
    if "dynamic_smem_bytes" in data:
        smem = int(data["dynamic_smem_bytes"])
    else:
        from templates.registry import get_family

        smem = get_family(problem.family).smem_bytes(problem, config)
    return MeasuredRecord(
        problem=problem,
        config=config,
        arch=data["arch"],
        time_ms=float(time_ms),
        resources=Resources(**{name: int(res[name]) for name in RESOURCE_FIELDS}),
        dynamic_smem_bytes=smem,
        loop_counts=counts,
    )


def load_records(paths: Sequence[Path]) -> list[MeasuredRecord]:
    """Every record of `paths`; ValueError 'FILE:LINE: what is wrong' on the first bad one."""
    records = []
    for path in paths:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                records.append(_parse(json.loads(line)))
            except (ValueError, TypeError, KeyError, TesseraError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ValueError(f"{path}:{number}: {reason}") from None
    if not records:
        raise ValueError(f"{', '.join(map(str, paths))}: no records (expected JSON lines)")
    return records


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); 0.0 when either is constant."""

    def ranks(values: Sequence[float]) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        order = np.argsort(array, kind="stable")
        result = np.empty(len(array))
        result[order] = np.arange(len(array), dtype=np.float64)
        for value in np.unique(array):  # ties share their mean rank
            tied = array == value
            result[tied] = result[tied].mean()
        return result

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass(frozen=True)
class Agreement:
    """How well model times rank and match measured ones."""

    spearman: float
    median_abs_log_ratio: float

    @classmethod
    def of(cls, model_ms: Sequence[float], measured_ms: Sequence[float]) -> Agreement:
        ratios = np.log(np.asarray(model_ms) / np.asarray(measured_ms))
        return cls(spearman(model_ms, measured_ms), float(np.median(np.abs(ratios))))


@dataclass(frozen=True)
class Fit:
    """One arch's fitted factors and the agreement before and after."""

    arch: str
    records: int
    factors: Factors
    before: Agreement
    after: Agreement

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "records": self.records,
            "factors": self.factors.to_dict(),
            "before": self.before.__dict__,
            "after": self.after.__dict__,
        }


def _factors(log_factors: np.ndarray) -> Factors:
    return Factors(**dict(zip(FACTOR_NAMES, np.exp(log_factors).tolist(), strict=True)))


def fit_arch(records: Sequence[MeasuredRecord]) -> Fit:
    """Fit the factors of one arch's records (see the module docstring for the method)."""
    arch = records[0].arch
    measured = np.log([r.time_ms for r in records])

    def residuals(theta: np.ndarray) -> np.ndarray:
        factors = _factors(theta)
        return np.log([r.model_ms(factors) for r in records]) - measured

    def objective(r: np.ndarray, theta: np.ndarray) -> float:
        a = np.abs(r)
        huber = np.where(a <= HUBER_DELTA, 0.5 * r**2, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))
        return float(huber.sum() + 0.5 * RIDGE * len(r) * (theta**2).sum())

    theta = np.zeros(len(FACTOR_NAMES))
    r = residuals(theta)
    before = Agreement.of(np.exp(r + measured).tolist(), np.exp(measured).tolist())
    damping = 1e-2
    for _ in range(MAX_ITERATIONS):
        jac = np.empty((len(r), len(theta)))
        for j in range(len(theta)):
            shifted = theta.copy()
            shifted[j] += STEP
            jac[:, j] = (residuals(shifted) - r) / STEP
        weights = np.minimum(1.0, HUBER_DELTA / np.maximum(np.abs(r), 1e-12))  # Huber IRLS
        ridge = RIDGE * len(r)
        normal = (jac.T * weights) @ jac + ridge * np.eye(len(theta))
        gradient = (jac.T * weights) @ r + ridge * theta
        current = objective(r, theta)
        improved = False
        while damping < 1e6:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-9), -gradient)
            candidate = np.clip(theta + step, -3.0, 3.0)  # factors within e^+-3
            r_new = residuals(candidate)
            if objective(r_new, candidate) < current:
                theta, r, damping, improved = candidate, r_new, max(damping / 3, 1e-6), True
                break
            damping *= 4
        if not improved or np.max(np.abs(step)) < 1e-5:
            break
    after = Agreement.of(np.exp(r + measured).tolist(), np.exp(measured).tolist())
    return Fit(arch, len(records), _factors(theta), before, after)


def fit(records: Sequence[MeasuredRecord]) -> list[Fit]:
    """One Fit per arch of `records`, in arch order; ValueError if an arch has too few."""
    by_arch: dict[str, list[MeasuredRecord]] = {}
    for record in records:
        by_arch.setdefault(record.arch, []).append(record)
    for arch, group in by_arch.items():
        if len(group) < MIN_RECORDS:
            raise ValueError(
                f"arch {arch}: {len(group)} records; need at least {MIN_RECORDS} to calibrate"
            )
    return [fit_arch(by_arch[arch]) for arch in sorted(by_arch)]


def write_calibration(fits: Sequence[Fit], path: Path) -> None:
    """Store each fit's factors under its arch in `path`, keeping the other archs' entries."""
    data: dict[str, Any] = {}
    if path.is_file():
        data = json.loads(path.read_text())
    for result in fits:
        data[result.arch] = {
            "factors": result.factors.to_dict(),
            "records": result.records,
            "spearman": result.after.spearman,
            "median_abs_log_ratio": result.after.median_abs_log_ratio,
        }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _print(fits: Sequence[Fit]) -> None:
    for result in fits:
        print(f"{result.arch}: {result.records} measured records")
        print(f"  {'':24} {'spearman':>9} {'median |log(model/measured)|':>29}")
        for label, agreement in (("before (factors 1.0)", result.before), ("after", result.after)):
            print(
                f"  {label:24} {agreement.spearman:>9.3f} {agreement.median_abs_log_ratio:>29.3f}"
            )
        factors = ", ".join(f"{k}={v:.3g}" for k, v in result.factors.to_dict().items())
        print(f"  factors: {factors}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m autotune.calibrate",
        description="Fit the cost model's efficiency factors per arch to measured records "
        "(JSON lines; format in this module's docstring) and report rank correlation and "
        "median |log ratio| before and after.",
    )
    parser.add_argument("records", nargs="+", type=Path, metavar="RECORDS.jsonl")
    parser.add_argument(
        "--write",
        nargs="?",
        const=CALIBRATION_PATH,
        type=Path,
        metavar="PATH",
        help=f"store the factors (default path: {CALIBRATION_PATH})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        fits = fit(load_records(args.records))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.write is not None:
        write_calibration(fits, args.write)
    if args.json:
        print(json.dumps({"fits": [f.to_dict() for f in fits]}, sort_keys=True))
    else:
        _print(fits)
        if args.write is not None:
            print(f"stored in {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m autotune.calibrate"))
