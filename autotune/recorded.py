"""Recorded tuning spaces: Kernel Tuner cache files (plain or gzipped JSON) and CSV tables.

A recorded space is every configuration of a kernel's space timed on one GPU. Validity comes
from the kernel's published restrictions when they are known (RESTRICTIONS, by kernel name);
for any other kernel the valid set is exactly the recorded configurations: Kernel Tuner
records only configurations that pass the restrictions, so a configuration absent from the
file is treated as one the restrictions exclude.

CSV: a header row with one column per parameter plus `time` (ms, lower is better); a row whose
`time` is empty or not a number is a failed configuration. Parameter values that parse as
integers or floats are numbers, others stay strings; each parameter's choices are its
distinct values, sorted.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.search_space import SearchSpace, Values

GZIP_MAGIC = b"\x1f\x8b"

Restriction = tuple[str, Callable[[Mapping[str, Any]], bool]]

# The kernels' restrictions as published with the spaces (shared/tuning-spaces/README.md).
RESTRICTIONS: dict[str, tuple[Restriction, ...]] = {
    "convolution_kernel": (
        (
            "padding_needs_unaligned_x",
            lambda p: p["use_padding"] == 0 or p["block_size_x"] % 32 != 0,
        ),
        ("threads", lambda p: p["block_size_x"] * p["block_size_y"] <= 1024),
        ("padding_needs_shmem", lambda p: p["use_padding"] == 0 or p["use_shmem"] != 0),
        (
            "shmem_tile",
            lambda p: (
                p["use_shmem"] == 0
                or (p["block_size_x"] * p["tile_size_x"] + 14)
                * (p["block_size_y"] * p["tile_size_y"] + 14)
                < 12 * 1024
            ),
        ),
    ),
    "Xgemm": (
        ("KWG_KWI", lambda p: p["KWG"] % p["KWI"] == 0),
        ("MWG_MDIMC_VWM", lambda p: p["MWG"] % (p["MDIMC"] * p["VWM"]) == 0),
        ("NWG_NDIMC_VWN", lambda p: p["NWG"] % (p["NDIMC"] * p["VWN"]) == 0),
        ("MWG_MDIMA_VWM", lambda p: p["MWG"] % (p["MDIMA"] * p["VWM"]) == 0),
        ("NWG_NDIMB_VWN", lambda p: p["NWG"] % (p["NDIMB"] * p["VWN"]) == 0),
        ("KWG_MDIMA", lambda p: p["KWG"] % ((p["MDIMC"] * p["NDIMC"]) // p["MDIMA"]) == 0),
        ("KWG_NDIMB", lambda p: p["KWG"] % ((p["MDIMC"] * p["NDIMC"]) // p["NDIMB"]) == 0),
    ),
}


class RecordError(ValueError):
    """A recorded space or records file that cannot be read; the message is one line."""


@dataclass(frozen=True)
class RecordedSpace:
    """A recorded space: its search space, each configuration's time (None: failed), the optimum."""

    name: str
    kernel: str
    space: SearchSpace
    times_ms: dict[Values, float | None]
    optimum_ms: float
    restrictions_known: bool

    @property
    def valid_points(self) -> list[Values]:
        return self.space.valid_points

    def time_ms(self, values: Values) -> float | None:
        """The recorded time; None for a failed or unrecorded configuration."""
        return self.times_ms.get(values)

    def ranking(self) -> list[Values]:
        """Recorded configurations fastest first; failed ones last (a warm start's prior)."""
        ok = sorted((t, v) for v, t in self.times_ms.items() if t is not None)
        failed = [v for v, t in self.times_ms.items() if t is None]
        return [v for _, v in ok] + failed


def _restricted(restrictions: Sequence[Restriction]) -> Callable[[Mapping[str, Any]], list[str]]:
    def violations(params: Mapping[str, Any]) -> list[str]:
        return [name for name, ok in restrictions if not ok(params)]

    return violations


def _recorded_only(
    names: Sequence[str], recorded: set[Values]
) -> Callable[[Mapping[str, Any]], list[str]]:
    def violations(params: Mapping[str, Any]) -> list[str]:
        values = tuple(params[name] for name in names)
        return [] if values in recorded else ["not among the recorded configurations"]

    return violations


def _time_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not a readable gzip or UTF-8 text file ({exc})") from None


def _build(
    path: Path, kernel: str, params: tuple[tuple[str, tuple[Any, ...]], ...], times: dict
) -> RecordedSpace:
    finite = [t for t in times.values() if t is not None]
    if not finite:
        raise RecordError(f"{path}: no configuration with a numeric time; nothing to replay")
    names = [name for name, _ in params]
    known = kernel in RESTRICTIONS
    violations = _restricted(RESTRICTIONS[kernel]) if known else _recorded_only(names, set(times))
    return RecordedSpace(
        name=path.name.split(".")[0],
        kernel=kernel,
        space=SearchSpace(params=params, violations=violations),
        times_ms=times,
        optimum_ms=min(finite),
        restrictions_known=known,
    )


def _load_kernel_tuner(path: Path, text: str) -> RecordedSpace:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise RecordError(f"{path}: JSON nested too deeply to be a Kernel Tuner file") from None
    missing = [
        k
        for k in ("tune_params_keys", "tune_params", "cache")
        if not isinstance(data, dict) or k not in data
    ]
    if missing:
        raise RecordError(
            f"{path}: not a Kernel Tuner cache file (missing {', '.join(missing)}); "
            "expected its JSON with tune_params_keys, tune_params and cache"
        )
    keys = list(data["tune_params_keys"])
    try:
        params = tuple((k, tuple(data["tune_params"][k])) for k in keys)
        times: dict[Values, float | None] = {}
        for record in data["cache"].values():
            values = tuple(record[k] for k in keys)
            failed = "__error__" in record
            times[values] = None if failed else _time_or_none(record.get("time"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"{path}: malformed Kernel Tuner cache record ({exc!r})") from None
    return _build(path, str(data.get("kernel_name", path.stem)), params, times)


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _load_csv(path: Path, text: str) -> RecordedSpace:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "time" not in rows[0]:
        raise RecordError(
            f"{path}: a CSV space needs a header row with one column per parameter plus 'time'"
        )
    header = [h.strip() for h in rows[0]]
    names = [h for h in header if h != "time"]
    if not names:
        raise RecordError(f"{path}: the CSV has a 'time' column but no parameter columns")
    t_col = header.index("time")
    times: dict[Values, float | None] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise RecordError(f"{path}: line {line} has {len(row)} fields, expected {len(header)}")
        values = tuple(_number(row[i].strip()) for i, h in enumerate(header) if h != "time")
        parsed = _number(row[t_col].strip())
        times[values] = _time_or_none(parsed)
    choices = [
        sorted({v[j] for v in times}, key=lambda x: (isinstance(x, str), x))
        for j in range(len(names))
    ]
    params = tuple((name, tuple(c)) for name, c in zip(names, choices, strict=True))
    return _build(path, path.name.split(".")[0], params, times)


def load_space(path: Path) -> RecordedSpace:
    """Read a Kernel Tuner cache file (JSON, optionally gzipped) or a CSV table.

    Raises:
        RecordError: a missing, unreadable or malformed file (one line naming it).
    """
    text = _read_text(path)
    suffixes = [s.lower() for s in path.suffixes]
    if ".csv" in suffixes:
        return _load_csv(path, text)
    return _load_kernel_tuner(path, text)


def load_ranking(path: Path) -> list[dict[str, Any]]:
    """Configurations measured elsewhere, fastest first: a warm start's prior.

    Accepts a recorded space (Kernel Tuner JSON or CSV, see load_space), a tune job's --json
    output (its "top" rows), or tuning records: a JSON list or JSON lines of objects with a
    "config" and a "value_ms" or "time_ms" (records without a time are skipped).
    """
    text = _read_text(path)
    if ".csv" in [s.lower() for s in path.suffixes] or '"tune_params"' in text[:100_000]:
        space = load_space(path)
        return [space.space.as_dict(v) for v in space.ranking()]
    rows: list[Any] = []
    try:
        data = json.loads(text)
        rows = data if isinstance(data, list) else data.get("top", [data])
    except json.JSONDecodeError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise RecordError(
                f"{path}: not a recorded space, JSON or JSON lines of tuning records ({exc.msg})"
            ) from None
    timed = []
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("config"), dict):
            t = _time_or_none(row.get("value_ms", row.get("time_ms")))
            if t is not None:
                timed.append((t, row["config"]))
    if not timed:
        raise RecordError(
            f"{path}: no record with a config and a value_ms/time_ms; expected tuning records"
        )
    return [config for _, config in sorted(timed, key=lambda tc: tc[0])]
