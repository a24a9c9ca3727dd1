"""Hotspot detection over runtime traces: rank signatures by total time, propose tuning tasks."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from templates.registry import FAMILY_NAMES
from tessera_core.cli import ArgumentParser, int_at_least, number_at_least, run_cli
from tessera_core.config import configure_logging
from tessera_core.errors import UsageError
from tessera_core.types import (
    AttentionBackwardProblem,
    AttentionDecodeProblem,
    AttentionProblem,
    GemmProblem,
    Problem,
    stable_json,
)

log = logging.getLogger("tessera.autotune.hotspots")

# "select": an arch-specific family refused a signature (runtime.dispatcher), with its reason.
EVENTS = ("call", "promote", "demote", "tune", "select")
PROG = "python -m autotune.hotspots"


@dataclass(frozen=True)
class TraceRecord:
    """One line of a runtime trace: a call (event 'call') or a tier change or tuning outcome.

    `shape` is (batch, heads, seq_q, seq_kv, head_dim) for attention and (m, n, k) for gemm;
    a gemm's operand layout (nt, tn, tt) travels in `variant` (absent when nn).
    """

    time_s: float  # Unix time the call started
    event: str
    op: str
    dtype: str
    shape: tuple[int, ...]
    causal: bool
    scale: float | None
    tier: int
    wall_ms: float
    kernel_key: str | None = None
    config: dict[str, int] | None = None
    ok: bool = True
    detail: str = ""
    pid: int = 0
    variant: dict[str, Any] | None = None  # attention's non-default variants (Signature.variant)
    rank: int | None = None  # the process's rank in a multi-process job (None: not in one)

    @property
    def layout(self) -> str:
        """A gemm's operand layout (nn, nt, tn, tt), carried in the variant like Signature's."""
        return str((self.variant or {}).get("layout", "nn")) if self.op == "gemm" else "nn"

    def to_json(self) -> str:
        data = asdict(self)
        data["shape"] = list(self.shape)
        if self.variant is None:
            del data["variant"]  # plain calls' lines stay as they were
        return stable_json(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceRecord:
        """The record a parsed trace line describes; ValueError/TypeError/KeyError if none."""
        if not isinstance(data, dict):
            raise TypeError(f"a trace line is a JSON object, not {type(data).__name__}")
        scale = data.get("scale")
        config = data.get("config")
        kernel_key = data.get("kernel_key")
        if scale is not None:
            scale = _finite(scale, "scale")
        if config is not None and not (
            isinstance(config, dict)
            and all(isinstance(k, str) and type(v) is int for k, v in config.items())
        ):
            raise TypeError(f"config={config!r}: expected an object of integer tile fields")
        if kernel_key is not None and not isinstance(kernel_key, str):
            raise TypeError(f"kernel_key={kernel_key!r}: expected a string")
        if not isinstance(data["shape"], list):
            raise TypeError(f"shape={data['shape']!r}: expected a list of integers")
        variant = data.get("variant")
        if variant is not None and not isinstance(variant, dict):
            raise TypeError(f"variant={variant!r}: expected an object of attention variants")
        return cls(
            time_s=_finite(data["time_s"], "time_s"),
            event=str(data["event"]),
            op=str(data["op"]),
            dtype=str(data["dtype"]),
            shape=tuple(int(d) for d in data["shape"]),
            causal=bool(data["causal"]),
            scale=scale,
            tier=int(data["tier"]),
            wall_ms=_finite(data["wall_ms"], "wall_ms"),
            kernel_key=kernel_key,
            config=config,
            ok=bool(data.get("ok", True)),
            detail=str(data.get("detail", "")),
            pid=int(data.get("pid", 0)),
            variant=variant,
            rank=None if data.get("rank") is None else int(data["rank"]),
        )

    def problem(self) -> Problem:
        if self.op == "attention":
            b, h, sq, skv, d = self.shape
            variant = {k: v for k, v in (self.variant or {}).items() if k != "max_seqlen"}
            return AttentionProblem(b, h, sq, skv, d, self.dtype, self.causal, **variant)  # type: ignore[arg-type]
        if self.op == "attention_bwd":  # the forward's variants, as the signature carries them
            b, h, sq, skv, d = self.shape
            variant = dict(self.variant or {})
            return AttentionBackwardProblem(b, h, sq, skv, d, self.dtype, self.causal, **variant)  # type: ignore[arg-type]
        if self.op == "attention_decode":
            b, hq, hkv, sq, kv, d, page = self.shape
            return AttentionDecodeProblem(
                b,
                hq,
                sq,
                kv,
                d,
                self.dtype,  # type: ignore[arg-type]
                self.causal,
                heads_kv=hkv,
                page_size=page,
                alibi=(self.variant or {}).get("alibi", "none"),
            )
        m, n, k = self.shape
        return GemmProblem(m, n, k, dtype=self.dtype, layout=self.layout)  # type: ignore[arg-type]


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}={value!r}: expected a finite number")
    return number


@dataclass(frozen=True)
class Hotspot:
    """One problem's share of a trace: how often, how long, on which tiers."""

    problem: Problem
    count: int
    total_ms: float
    min_ms: float
    max_ms: float
    share: float  # of the whole trace's call time
    tiers: dict[int, int]  # tier -> calls
    last_tier: int
    scales: int  # distinct scale values seen (the kernel takes scale at run time)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count

    def label(self) -> str:
        mask = " causal" if getattr(self.problem, "causal", False) else ""
        return f"{self.problem.op} {self.problem.dtype} {self.problem.shape_str()}{mask}"


@dataclass(frozen=True)
class Pattern:
    """How consistent one op's calls are: one dominant shape favours specialization."""

    op: str
    calls: int
    shapes: int
    dtypes: int
    top_shape_share: float
    top_dtype_share: float
    shape_counts: dict[str, int] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        return self.top_shape_share >= CONSISTENT_SHARE

    def verdict(self) -> str:
        if self.consistent:
            return "consistent shapes: specialized (tier 3) kernels pay off"
        return "varied shapes: the generic (tier 2) kernel carries most calls"


CONSISTENT_SHARE = 0.8  # a shape taking this share of an op's calls makes its pattern 'consistent'


def load_trace(path: str | Path) -> list[TraceRecord]:
    """Every well-formed record of a JSONL trace; a malformed line is skipped and counted.

    A line is well-formed when it parses as a JSON object, names a known event and describes
    a valid problem with finite times. Anything else (a torn line from a killed writer, a
    hand-edited or hostile one, JSON nested too deep to parse, numbers too large) is skipped,
    and one warning on the `tessera.autotune.hotspots` logger counts them, so one bad line
    never stops `rank` or the CLI.

    Raises:
        OSError: the trace is missing, a directory or unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"trace {path} does not exist; run with RuntimeConfig(trace_path=...)"
        )
    if not path.is_file():
        raise IsADirectoryError(f"trace {path} is not a file; pass the JSONL file itself")
    records, bad = [], 0
    # errors="replace": a torn multi-byte character must not end the whole read.
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = TraceRecord.from_dict(json.loads(line))
                if record.event not in EVENTS:
                    raise ValueError(f"unknown event {record.event!r}")
                record.problem()  # shape, dtype and op must describe a problem
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
                bad += 1
                continue
            except RecursionError:  # '[[[[...' nested deeper than the parser's stack
                bad += 1
                continue
            records.append(record)
    if bad:
        log.warning("trace %s: skipped %d malformed line(s)", path, bad)
    return records


def _successful_calls(records: Iterable[TraceRecord]) -> list[TraceRecord]:
    """The records a ranking counts: calls that returned (not tier changes, not failures)."""
    return [r for r in records if r.event == "call" and r.ok]


def rank(
    records: Iterable[TraceRecord], *, min_count: int = 2, min_time_ms: float = 0.0
) -> list[Hotspot]:
    """Successful calls grouped by problem, hottest (cumulative wall time) first.

    A problem is a hotspot when it was called at least `min_count` times and took at least
    `min_time_ms` in total.
    """
    groups: dict[Problem, list[TraceRecord]] = defaultdict(list)
    for record in _successful_calls(records):
        groups[record.problem()].append(record)
    grand_total_ms = sum(r.wall_ms for group in groups.values() for r in group) or 1.0
    hotspots = []
    for problem, group in groups.items():
        total_ms = sum(r.wall_ms for r in group)
        if len(group) < min_count or total_ms < min_time_ms:
            continue
        times = [r.wall_ms for r in group]
        hotspots.append(
            Hotspot(
                problem=problem,
                count=len(group),
                total_ms=total_ms,
                min_ms=min(times),
                max_ms=max(times),
                share=total_ms / grand_total_ms,
                tiers=dict(sorted(Counter(r.tier for r in group).items())),
                # The latest call; among equal timestamps the one written last.
                last_tier=max(enumerate(group), key=lambda ir: (ir[1].time_s, ir[0]))[1].tier,
                scales=len({r.scale for r in group}),
            )
        )
    hotspots.sort(key=lambda h: (-h.total_ms, h.label()))
    return hotspots


def patterns(records: Iterable[TraceRecord]) -> list[Pattern]:
    """Per op: how many distinct shapes and dtypes, and how dominant the most common of each is."""
    by_op: dict[str, list[TraceRecord]] = defaultdict(list)
    for record in _successful_calls(records):
        by_op[record.op].append(record)
    result = []
    for op, group in sorted(by_op.items()):
        shapes = Counter("x".join(map(str, r.shape)) for r in group)
        dtypes = Counter(r.dtype for r in group)
        result.append(
            Pattern(
                op=op,
                calls=len(group),
                shapes=len(shapes),
                dtypes=len(dtypes),
                top_shape_share=shapes.most_common(1)[0][1] / len(group),
                top_dtype_share=dtypes.most_common(1)[0][1] / len(group),
                shape_counts=dict(shapes.most_common()),
            )
        )
    return result


def propose_tasks(
    hotspots: Sequence[Hotspot], top: int, *, skip_specialized: bool = False
) -> list[Problem]:
    """The problems of the `top` hottest hotspots, to tune (e.g. `generator.tune --from-trace`).

    With `skip_specialized`, hotspots whose latest call already ran at tier 3 are passed over;
    so are, always, those of ops with no kernel family to tune (templates.registry.FAMILY_NAMES).
    """
    if top < 0:
        raise ValueError(f"top={top}: expected a count >= 0")
    chosen = [
        h
        for h in hotspots
        if h.problem.family in FAMILY_NAMES and not (skip_specialized and h.last_tier == 3)
    ]
    return [h.problem for h in chosen[:top]]


def tune_command(problem: Problem) -> str:
    """The `generator.tune` command line that tunes one proposed problem."""
    from generator.attention_args import flags

    causal = " --causal" if getattr(problem, "causal", False) else ""
    return (
        f"python -m generator.tune --op {problem.op} --shape {problem.shape_str()} "
        f"--dtype {problem.dtype}{causal}{flags(problem)}"
    )


def report(records: Sequence[TraceRecord], *, min_count: int, min_time_ms: float, top: int) -> str:
    """The text `python -m autotune.hotspots` prints: hotspots, patterns, proposed tasks."""
    hotspots = rank(records, min_count=min_count, min_time_ms=min_time_ms)
    calls = len(_successful_calls(records))
    lines = [
        f"{calls} successful call(s), {len(hotspots)} hotspot(s) "
        f"(min_count={min_count}, min_time_ms={min_time_ms:g})",
        "",
    ]
    lines.append(
        f"{'#':>3} {'problem':<42} {'calls':>6} {'total ms':>10} {'mean ms':>9} {'share':>6}  tiers"
    )
    for i, h in enumerate(hotspots, 1):
        tiers = " ".join(f"t{t}:{n}" for t, n in h.tiers.items())
        lines.append(
            f"{i:>3} {h.label():<42} {h.count:>6} {h.total_ms:>10.3f} "
            f"{h.mean_ms:>9.3f} {h.share:>6.1%}  {tiers}"
        )
    lines.append("")
    lines.append("patterns:")
    for p in patterns(records):
        lines.append(
            f"  {p.op}: {p.calls} calls, {p.shapes} shape(s) (top {p.top_shape_share:.0%}), "
            f"{p.dtypes} dtype(s) (top {p.top_dtype_share:.0%}): {p.verdict()}"
        )
    lines.append("")
    lines.append(f"proposed tuning tasks (top {top}):")
    for problem in propose_tasks(hotspots, top):
        lines.append(f"  {tune_command(problem)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = ArgumentParser(
        prog=PROG,
        description="Rank the signatures of a runtime trace (JSONL) and propose tuning tasks. "
        "Malformed trace lines are skipped; one warning on stderr says how many.",
    )
    parser.add_argument(
        "trace", type=Path, help="JSONL trace written by RuntimeConfig(trace_path=)"
    )
    parser.add_argument(
        "--min-count", type=int_at_least(1), default=2, help="calls a hotspot needs (default 2)"
    )
    parser.add_argument(
        "--min-time-ms",
        type=number_at_least(0),
        default=0.0,
        help="cumulative milliseconds a hotspot needs (default 0)",
    )
    parser.add_argument(
        "--top", type=int_at_least(0), default=5, help="tuning tasks to propose (default 5)"
    )
    parser.add_argument("--json", action="store_true", help="print the hotspots as JSON")
    args = parser.parse_args(argv)
    try:
        records = load_trace(args.trace)
    except OSError as exc:  # missing, a directory, unreadable
        message = str(exc) if exc.strerror is None else f"trace {args.trace}: {exc.strerror}"
        raise UsageError(message) from None
    if args.json:
        hotspots = rank(records, min_count=args.min_count, min_time_ms=args.min_time_ms)
        print(
            json.dumps(
                [
                    {
                        "problem": h.problem.to_dict(),
                        "count": h.count,
                        "total_ms": h.total_ms,
                        "mean_ms": h.mean_ms,
                        "share": h.share,
                        "tiers": h.tiers,
                        "last_tier": h.last_tier,
                    }
                    for h in hotspots
                ],
                indent=2,
            )
        )
    else:
        print(report(records, min_count=args.min_count, min_time_ms=args.min_time_ms, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
