"""`python -m cache`: list, show, verify, prune, clear, export and import kernel cache entries."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from cache.bundle import export_bundle, import_bundle
from cache.inventory import EntryInfo
from cache.store import KernelCache
from tessera_core.cli import int_at_least
from tessera_core.config import configure_logging
from tessera_core.errors import TesseraError
from tessera_core.types import TileConfig


def _when(epoch_s: Any) -> str:
    if not isinstance(epoch_s, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def _config_str(config: Any) -> str:
    if not isinstance(config, dict):
        return "-"
    try:
        return str(TileConfig.from_dict(config))
    except (ValueError, TypeError):
        return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _objective_str(objective: Any) -> str:
    if not isinstance(objective, dict):
        return "-"
    kind, value = objective.get("kind", "?"), objective.get("value")
    return f"{kind}={value:.4g}" if isinstance(value, (int, float)) else str(kind)


def _row(info: EntryInfo) -> list[str]:
    meta = info.metadata or {}
    key = info.kernel_key + (" (ro)" if info.read_only else "")
    if info.metadata is None:
        return [key, "CORRUPT", "-", "-", str(info.size_bytes), _when(info.last_used_s)]
    return [
        key,
        _config_str(meta.get("config")),
        _when(meta.get("created_at")),
        _objective_str(meta.get("objective")),
        str(info.size_bytes),
        _when(info.last_used_s),
    ]


def _cmd_ls(cache: KernelCache, args: argparse.Namespace) -> int:
    rows = [["key", "config", "time", "objective", "size", "last used"]]
    rows += [_row(info) for info in cache.entries()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cache", description=__doc__)
    parser.add_argument(
        "--cache-dir", help="writable cache directory (default: $TESSERA_CACHE_DIR or XDG)"
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=None,
        help="read-only cache layer searched after it (repeatable; default $TESSERA_CACHE_PATH)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="list entries: key, config, time, objective, size, last used")
    show = sub.add_parser("show", help="print one entry's metadata")
    show.add_argument("key")
    sub.add_parser("verify", help="check every entry; quarantine bad ones (exit 1 if any)")
    prune = sub.add_parser("prune", help="evict least recently used entries down to a limit")
    prune.add_argument("--max-bytes", type=int_at_least(0), default=None, help="byte limit (>= 0)")
    prune.add_argument(
        "--max-entries", type=int_at_least(0), default=None, help="entry limit (>= 0)"
    )
    sub.add_parser("clear", help="remove every entry of the writable cache")
    export = sub.add_parser("export", help="write entries to a .tar.gz bundle")
    export.add_argument("out")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--keys", nargs="+")
    which.add_argument("--all", action="store_true")
    imp = sub.add_parser("import", help="verify a bundle, then add its entries")
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


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        cache = KernelCache(cache_dir=args.cache_dir, read_only_dirs=args.layer)
        return COMMANDS[args.command](cache, args)
    except (TesseraError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
