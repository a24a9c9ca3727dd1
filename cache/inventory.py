"""Inventory of cache layers: listing entries with their metadata, and verifying every entry."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.entry_file import EntryRead, read_entry, read_entry_metadata
from cache.layout import Layout
from cache.publish import quarantine

log = logging.getLogger("tessera.cache")


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
    """Every entry file of every (layout, read_only) layer with its metadata, payloads unread.

    A bad entry (anything but a regular file, unparsable metadata) is listed with
    `metadata=None` and its problem; nothing at an entry path can stop the listing.
    """
    infos = []
    for layout, read_only in layers:
        for key in layout.entry_keys():
            path = layout.entry_path(key)
            problem: str | None
            metadata: dict[str, Any] | None = None
            try:
                read = read_entry_metadata(path)
                if read is None:
                    continue  # removed since listing
                problem, st, metadata = read.problem, read.stat, read.metadata
            except OSError as exc:
                problem = f"unreadable: {exc}"
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
            infos.append(
                EntryInfo(
                    kernel_key=key,
                    layer=layout.root,
                    read_only=read_only,
                    size_bytes=st.st_size,
                    last_used_s=st.st_mtime,
                    metadata=metadata if problem is None else None,
                    problem=problem,
                )
            )
    return infos


def read_checked(layout: Layout, kernel_key: str, *, read_only: bool) -> EntryRead | None:
    """One layer's entry file, read and verified, None if absent; a bad one comes back with
    its problem, quarantined first if the layer is writable.

    Raises:
        OSError: it cannot be read (permissions, I/O); not the entry's fault, not moved.
    """
    path = layout.entry_path(kernel_key)
    read = read_entry(path, kernel_key=kernel_key)
    if read is not None and read.problem is not None:
        log.warning("bad cache entry %s: %s", path, read.problem)
        if not read_only:
            quarantine(layout, path, read.stat)
    return read


def verify_layers(layers: Sequence[tuple[Layout, bool]]) -> list[BadEntry]:
    """Check every entry of every layer; quarantine bad ones of writable layers."""
    bad = []
    for layout, read_only in layers:
        for key in layout.entry_keys():
            path = layout.entry_path(key)
            try:
                read = read_checked(layout, key, read_only=True)  # quarantined below, counted
            except OSError as exc:  # not the entry's fault (permissions, I/O): not moved
                bad.append(
                    BadEntry(kernel_key=key, layer=layout.root, reason=str(exc), removed=False)
                )
                continue
            if read is None or read.problem is None:
                continue
            removed = not read_only and quarantine(layout, path, read.stat)
            bad.append(
                BadEntry(kernel_key=key, layer=layout.root, reason=read.problem, removed=removed)
            )
    return bad
