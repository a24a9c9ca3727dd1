"""`python -m cache`: list, show, verify, prune, clear, export and import kernel cache entries."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from cache.bundle import export_bundle, import_bundle
from cache.inventory import EntryInfo
from cache.store import KernelCache
from tessera_core.cli import EXIT_USAGE, ArgumentParser, int_at_least, one_line, run_cli
from tessera_core.config import configure_logging
from tessera_core.errors import TesseraError
from tessera_core.types import TileConfig, problem_from_dict

PROG = "python -m cache"

COLUMNS = ["key", "config", "objective", "kernel_ms", "TFLOP/s", "bytes", "created", "last_used"]
SOURCES = {"measured": "measured", "model": "modelled"}  # objective kind -> how it was had


def _when(epoch_s: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def _config_str(config: Any) -> str:
    if not isinstance(config, dict):
        return "-"
    try:
        return str(TileConfig.from_dict(config))
    except (ValueError, TypeError):
        return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _kernel_time_ms(objective: dict[str, Any]) -> float | None:
    """The stored kernel time: `time_ms` (autotune.job), or `value` of a time objective."""
    if "time_ms" in objective:
        return _number(objective["time_ms"])
    return _number(objective.get("value")) if objective.get("kind") == "time_ms" else None


def _tflops(meta: dict[str, Any], objective: dict[str, Any], time_ms: float | None) -> str:
    """Stored TFLOP/s, else computed from the stored problem and kernel time."""
    tflops = _number(objective.get("tflops"))
    if tflops is None and time_ms is not None and isinstance(meta.get("problem"), dict):
        try:
            tflops = problem_from_dict(meta["problem"]).flops() / (time_ms * 1e-3) / 1e12
        except (TypeError, ValueError, ArithmeticError):
            tflops = None
    return "-" if tflops is None else f"{tflops:.1f}"


def _objective_cells(meta: dict[str, Any]) -> list[str]:
    """[measured|modelled, kernel time, TFLOP/s] of an entry."""
    objective = meta.get("objective")
    if not isinstance(objective, dict):
        return ["-", "-", "-"]
    source = SOURCES.get(str(objective.get("kind")), "-")
    time_ms = _kernel_time_ms(objective)
    time_cell = "-" if time_ms is None else f"{time_ms:.4g}"
    return [source, time_cell, _tflops(meta, objective, time_ms)]


def _row(info: EntryInfo) -> list[str]:
    meta = info.metadata or {}
    key = info.kernel_key + (" (ro)" if info.read_only else "")
    size, used = str(info.size_bytes), _when(info.last_used_s)
    if info.metadata is None:
        return [key, f"BAD: {info.problem}", "-", "-", "-", size, "-", used]
    return [
        key,
        _config_str(meta.get("config")),
        *_objective_cells(meta),
        size,
        _when(meta.get("created_at")),
        used,
    ]


def _cmd_ls(cache: KernelCache, args: argparse.Namespace) -> int:
    rows = [COLUMNS] + [_row(info) for info in cache.entries()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _cmd_show(cache: KernelCache, args: argparse.Namespace) -> int:
    entry = cache.require(args.key)
    print(f"layer: {entry.layer}{' (read-only)' if entry.read_only else ''}")
    print(f"size: {entry.size_bytes} bytes")
    print(json.dumps(entry.metadata, indent=2, sort_keys=True))
    return 0


def _cmd_verify(cache: KernelCache, args: argparse.Namespace) -> int:
    bad = cache.verify()
    for b in bad:
        if b.removed:
            action = "quarantined"
        elif b.layer == cache.search_path.writable:
            action = "could not be quarantined (see the warning above); left in place"
        else:
            action = "left in place (read-only layer)"
        print(f"BAD {b.kernel_key} in {b.layer}: {b.reason}; {action}")
    # Count per layer, as verify checks them; a bad entry left in a read-only layer is not ok.
    ok = len(cache.entries()) - sum(1 for b in bad if not b.removed)
    print(f"{ok} entries ok, {len(bad)} bad")
    return 1 if bad else 0


def _cmd_prune(cache: KernelCache, args: argparse.Namespace) -> int:
    evicted = cache.prune(max_bytes=args.max_bytes, max_entries=args.max_entries)
    for key in evicted:
        print(f"evicted {key}")
    print(f"{len(evicted)} entries evicted")
    return 0


def _cmd_clear(cache: KernelCache, args: argparse.Namespace) -> int:
    print(f"{cache.clear()} entries removed from {cache.search_path.writable}")
    return 0


def _cmd_export(cache: KernelCache, args: argparse.Namespace) -> int:
    keys = None if args.all else args.keys
    exported = export_bundle(cache, args.out, keys=keys)
    print(f"exported {len(exported)} entries to {args.out}")
    return 0


def _cmd_import(cache: KernelCache, args: argparse.Namespace) -> int:
    target = cache if args.into is None else KernelCache(cache_dir=args.into, read_only_dirs=())
    report = import_bundle(args.bundle, target, replace=args.replace)
    for key in report.imported:
        print(f"imported {key}")
    for key in report.skipped:
        print(f"kept existing {key} (use --replace to overwrite)")
    into = target.search_path.writable
    print(f"{len(report.imported)} imported, {len(report.skipped)} kept, into {into}")
    return 0


def _global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--cache-dir",
        default=default,
        help="writable cache directory (default: $TESSERA_CACHE_DIR or XDG)",
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=default,
        help="read-only cache layer searched after it (repeatable; default $TESSERA_CACHE_PATH)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__)
    _global_options(parser, default=None)
    # The same options after the subcommand (`ls --cache-dir X`); SUPPRESS keeps a value
    # given before the subcommand when none is given after it.
    common = ArgumentParser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common])

    command("ls", "list entries: key, config, measured/modelled, kernel time, TFLOP/s, size")
    show = command("show", "print one entry's metadata")
    show.add_argument("key")
    command("verify", "check every entry; quarantine bad ones (exit 1 if any)")
    prune = command("prune", "evict least recently used entries down to a limit")
    prune.add_argument("--max-bytes", type=int_at_least(0), default=None, help="byte limit (>= 0)")
    prune.add_argument(
        "--max-entries", type=int_at_least(0), default=None, help="entry limit (>= 0)"
    )
    command("clear", "remove every entry of the writable cache")
    export = command("export", "write entries to a .tar.gz bundle")
    export.add_argument("out")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--keys", nargs="+")
    which.add_argument("--all", action="store_true")
    imp = command("import", "verify a bundle, then add all its entries (or none)")
    imp.add_argument("bundle")
    imp.add_argument("--into", default=None, help="target directory (default: --cache-dir)")
    imp.add_argument("--replace", action="store_true", help="overwrite existing entries")
    return parser


COMMANDS = {
    "ls": _cmd_ls,
    "show": _cmd_show,
    "verify": _cmd_verify,
    "prune": _cmd_prune,
    "clear": _cmd_clear,
    "export": _cmd_export,
    "import": _cmd_import,
}


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging()
        cache = KernelCache(cache_dir=args.cache_dir, read_only_dirs=args.layer)
        return COMMANDS[args.command](cache, args)
    except BrokenPipeError:
        raise  # not an error of ours: run_cli ends quietly
    except (TesseraError, OSError, ValueError) as exc:  # ValueError: a bad TESSERA_* value
        print(f"{PROG} {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command with the shared CLI handling (tessera_core.cli.run_cli): exit 2 with
    one line for a bad argument, 130 on Ctrl-C, and quietly 141 when the reader of stdout
    goes away (`ls | head -1`)."""
    return run_cli(_run, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
