"""Inventory of cache layers: listing entries with their metadata, and verifying every entry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache import eviction
from cache.entry import read_entry_file, read_metadata, verify_entry
from cache.layout import Layout
from cache.publish import quarantine
from tessera_core.errors import CacheCorruptError


@dataclass(frozen=True, kw_only=True)
class EntryInfo:
    """One line of `KernelCache.entries()`: what `python -m cache ls` prints."""

    kernel_key: str
    layer: Path
    read_only: bool
    size_bytes: int
    last_used_s: float
    metadata: dict[str, Any] | None  # None when the metadata failed its checks
    problem: str | None = None  # why metadata is None


@dataclass(frozen=True, kw_only=True)
class BadEntry:
    """An entry that failed verification."""

    kernel_key: str
    layer: Path
    reason: str
    removed: bool


def list_entries(layers: Sequence[tuple[Layout, bool]]) -> list[EntryInfo]:
    """Every entry file of every (layout, read_only) layer with its metadata, payloads unread."""
    infos = []
    for layout, read_only in layers:
        for stat in sorted(eviction.scan(layout), key=lambda s: s.kernel_key):
            metadata: dict[str, Any] | None
            problem = None
            try:
                metadata = read_metadata(layout.entry_path(stat.kernel_key))
            except (CacheCorruptError, OSError) as exc:
                metadata, problem = None, str(exc)
            infos.append(
                EntryInfo(
                    kernel_key=stat.kernel_key,
                    layer=layout.root,
                    read_only=read_only,
                    size_bytes=stat.size_bytes,
                    last_used_s=stat.last_used_s,
                    metadata=metadata,
                    problem=problem,
                )
            )
    return infos


def verify_layers(layers: Sequence[tuple[Layout, bool]]) -> list[BadEntry]:
    """Check every entry of every layer; quarantine bad ones of writable layers."""
    bad = []
    for layout, read_only in layers:
        for key in layout.entry_keys():
            path = layout.entry_path(key)
            try:
                blob, st = read_entry_file(path)
            except FileNotFoundError:
                continue
            try:
                verify_entry(blob, path=str(path), kernel_key=key)
            except CacheCorruptError as exc:
                removed = not read_only and quarantine(layout, path, st)
                bad.append(
                    BadEntry(kernel_key=key, layer=layout.root, reason=exc.reason, removed=removed)
                )
    return bad
