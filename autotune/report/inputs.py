"""What the report reads: tuned cache entries, trial records, device measurements, bench summaries.

File formats the report accepts besides the runtime trace (autotune.hotspots.load_trace):

- trials (JSONL): one trial a line, `{"kernel_key": K, "number": N, "status": "ok",
  "value_ms": T, "kind": "model"|"measured", ...}` (autotune.search.TrialRecord.to_dict() plus
  the key); `write_trials` writes it. A cache entry whose metadata holds a `trials` list of
  the same records is read too.
- device report (JSON): an object with a `records` list (or a bare list) of measurements,
  each `{"kernel_key": K, "config": {...}, "time_ms": T}` (`median_ms` is accepted for
  `time_ms`), optionally `samples`; a record without `config` measures the tuned config.
- bench summary (JSON): written by `python -m runtime.bench` beside its trace; holds the
  configuration sets and the cross-tier consistency checks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera_core.types import Problem, TileConfig, problem_from_dict

CONSISTENCY_FIELDS = frozenset({"problem", "tier", "max_abs_err", "rel_err", "tolerance", "ok"})


class ReportInputError(ValueError):
    """An input file the report cannot use; the message names the file and the expected form."""


@dataclass(frozen=True)
class TunedEntry:
    """One cache entry's tuning outcome, as job.py stores it."""

    kernel_key: str
    problem: Problem
    arch: str
    config: TileConfig
    objective_kind: str  # "measured" | "model"
    time_ms: float
    resources: dict[str, Any] | None
    search: dict[str, Any]
    leaderboard: list[dict[str, Any]]
    trials: list[dict[str, Any]] = field(default_factory=list)


def tuned_entries(entries: Iterable[Any]) -> tuple[list[TunedEntry], list[str]]:
    """The cache entries (cache.inventory.EntryInfo) that hold a tuning outcome, and why the
    others were skipped (damaged metadata, no objective: stored by hand or by a bundle)."""
    tuned, skipped = [], []
    for info in entries:
        meta = info.metadata
        if meta is None:
            skipped.append(f"{info.kernel_key}: {info.problem or 'metadata failed its checks'}")
            continue
        objective = meta.get("objective")
        try:
            if not isinstance(objective, Mapping):
                raise KeyError("objective")
            time_ms = float(objective.get("time_ms", objective.get("value")))
            tuned.append(
                TunedEntry(
                    kernel_key=info.kernel_key,
                    problem=problem_from_dict(dict(meta["problem"])),
                    arch=str(meta["arch"]),
                    config=TileConfig.from_dict(meta["config"]),
                    objective_kind=str(objective.get("kind", "model")),
                    time_ms=time_ms,
                    resources=meta.get("resources"),
                    search=dict(meta.get("search", {})),
                    leaderboard=list(meta.get("leaderboard", [])),
                    trials=list(meta.get("trials", [])),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            skipped.append(f"{info.kernel_key}: no tuning outcome in its metadata ({exc})")
    tuned.sort(key=lambda e: e.kernel_key)
    return tuned, skipped


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportInputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ReportInputError(f"{what} {path} is a directory; pass the JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{what} {path} is not JSON ({exc}); expected {what}") from None


def write_trials(path: Path, kernel_key: str, records: Iterable[Any]) -> None:
    """Append `records` (TrialRecord or their dicts) of one tuning run to a trials JSONL."""
    with Path(path).open("a", encoding="utf-8") as handle:
        for record in records:
            data = record.to_dict() if hasattr(record, "to_dict") else dict(record)
            handle.write(json.dumps({"kernel_key": kernel_key, **data}, default=str) + "\n")


def load_trials(path: Path) -> dict[str, list[dict[str, Any]]]:
    """kernel_key -> trial records in the file's order; unparsable lines are an error."""
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not Path(path).is_file():
        raise ReportInputError(f"trials {path} is not a file; pass the JSONL of trial records")
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            by_key[str(data["kernel_key"])].append(data)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ReportInputError(
                f"trials {path} line {number}: expected a JSON object with a kernel_key ({exc})"
            ) from None
    return dict(by_key)


@dataclass(frozen=True)
class Measurement:
    """One measured time of a (kernel_key, config) on a GPU."""

    kernel_key: str
    config: TileConfig | None  # None: the tuned configuration of the key
    time_ms: float
    samples: int | None = None


def load_device_report(path: Path) -> list[Measurement]:
    """The measurements of a device report (see the module docstring for the form)."""
    data = _read_json(Path(path), "device report")
    records = data.get("records", data.get("measurements")) if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise ReportInputError(
            f"device report {path}: expected a JSON list, or an object with a 'records' list"
        )
    found = []
    for i, record in enumerate(records):
        try:
            time_ms = record.get("time_ms", record.get("median_ms"))
            if time_ms is None or "kernel_key" not in record:
                continue  # not a kernel timing (a toolchain line, a torch baseline)
            config = record.get("config")
            found.append(
                Measurement(
                    kernel_key=str(record["kernel_key"]),
                    config=TileConfig.from_dict(config) if config else None,
                    time_ms=float(time_ms),
                    samples=record.get("samples"),
                )
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise ReportInputError(
                f"device report {path} record {i}: expected kernel_key, time_ms and an "
                f"optional config ({exc})"
            ) from None
    return found


def load_bench_summary(path: Path) -> dict[str, Any]:
    """A `python -m runtime.bench` summary: sets, sizes, warm-up, and consistency checks."""
    data = _read_json(Path(path), "bench summary")
    checks = data.get("consistency") if isinstance(data, dict) else None
    if not isinstance(checks, list) or not all(
        isinstance(c, dict) and c.keys() >= CONSISTENCY_FIELDS for c in checks
    ):
        raise ReportInputError(
            f"bench summary {path}: expected the JSON object python -m runtime.bench writes "
            f"(a 'consistency' list of objects with {', '.join(sorted(CONSISTENCY_FIELDS))})"
        )
    return data
