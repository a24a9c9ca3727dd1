"""LRU eviction: which entries to remove so the cache fits its byte and entry limits."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cache.layout import Layout, key_of_entry_file

log = logging.getLogger("tessera.cache")

# A temp file this old belongs to a writer that died mid-put; younger ones may be in progress.
STALE_TMP_S = 3600.0


@dataclass(frozen=True, kw_only=True)
class EntryStat:
    kernel_key: str
    size_bytes: int
    last_used_s: float  # the entry file's mtime


def scan(layout: Layout) -> list[EntryStat]:
    """Size and last use of every entry present now."""
    stats = []
    try:
        with os.scandir(layout.entries_dir) as it:
            for item in it:
                key = key_of_entry_file(item.name)
                if key is None:
                    continue  # not an entry (see Layout.entry_keys)
                try:
                    st = item.stat()
                except FileNotFoundError:  # removed since listing
                    continue
                stats.append(
                    EntryStat(kernel_key=key, size_bytes=st.st_size, last_used_s=st.st_mtime)
                )
    except FileNotFoundError:
        pass
    return stats


def plan(
    stats: list[EntryStat],
    *,
    max_bytes: int | None,
    max_entries: int | None,
    protect: frozenset[str] = frozenset(),
) -> list[str]:
    """Keys to evict, least recently used first, until both limits hold.

    Entries in `protect` (the one just written) are kept even if that leaves the cache over
    its limit: a put must never evict itself.
    """
    total = sum(s.size_bytes for s in stats)
    count = len(stats)
    victims = []
    for s in sorted(stats, key=lambda s: (s.last_used_s, s.kernel_key)):
        over_bytes = max_bytes is not None and total > max_bytes
        over_count = max_entries is not None and count > max_entries
        if not (over_bytes or over_count):
            break
        if s.kernel_key in protect:
            continue
        victims.append(s.kernel_key)
        total -= s.size_bytes
        count -= 1
    return victims


def remove_stale(directory: Path, *, older_than_s: float = STALE_TMP_S) -> list[Path]:
    """Delete files older than `older_than_s` in `directory` (tmp/ or quarantine/).

    In tmp/ they are left by writers that died mid-put; they never count as entries, so an
    orphan can never block or corrupt a later put, and this only reclaims their space.
    """
    removed = []
    now = time.time()
    try:
        with os.scandir(directory) as it:
            for item in it:
                try:
                    if item.is_dir(follow_symlinks=False):
                        continue  # no writer leaves one; not ours to delete
                    if now - item.stat(follow_symlinks=False).st_mtime > older_than_s:
                        os.unlink(item.path)
                        removed.append(Path(item.path))
                except FileNotFoundError:
                    continue
                except OSError as exc:  # housekeeping only: never fail the prune or clear
                    log.warning("could not remove stale %s: %s", item.path, exc)
    except FileNotFoundError:
        pass
    return removed
