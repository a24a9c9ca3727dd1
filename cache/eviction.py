"""LRU eviction: which entries to remove so the cache fits its byte and entry limits, and
reclaiming what dead writers left in tmp/."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from cache.entry_file import MAX_ENTRY_BYTES
from cache.layout import Layout, key_of_entry_file
from cache.lock import try_lock_fd
from cache.publish import STAGING_SUFFIX

log = logging.getLogger("tessera.cache")

# A quarantined file this old has had its time to be looked at; prune deletes it.
STALE_QUARANTINE_S = 3600.0
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, kw_only=True)
class EntryStat:
    kernel_key: str
    size_bytes: int
    last_used_s: float  # the entry file's mtime


def scan(layout: Layout) -> list[EntryStat]:
    """Size and last use of every entry file present now. Only regular files of entry size
    count: anything else at an entry path (a FIFO, a link, a sparse 8 GiB file) is a bad entry
    for readers to quarantine, never an eviction candidate whose claimed size evicts the rest."""
    stats = []
    try:
        with os.scandir(layout.entries_dir) as it:
            for item in it:
                key = key_of_entry_file(item.name)
                if key is None:
                    continue  # not an entry (see Layout.entry_keys)
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:  # removed since listing
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_ENTRY_BYTES:
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


def _reap_if_dead(path: Path, *, is_dir: bool) -> bool:
    """Remove the temp file or staging dir at `path` if no live process holds its lock.

    The lock is taken on the open inode, and the name is checked to still be that inode: a
    temp file its writer renamed into entries/ just before is never touched.
    """
    flags = _OPEN_FLAGS | (os.O_DIRECTORY if is_dir else 0)
    fd = os.open(path, flags)
    try:
        if not try_lock_fd(fd):
            return False  # a live writer owns it
        st, now = os.fstat(fd), os.lstat(path)
        if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
            return False
        if is_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
        return True
    finally:
        os.close(fd)


def reap_orphans(tmp_dir: Path) -> list[Path]:
    """Delete what dead writers left in tmp/; return the paths removed.

    A writer holds its temp file (an import its staging directory) flocked for its whole
    life, so anything in tmp/ that can be locked is an orphan: removed at once, however young,
    so orphans never hold space the byte limit does not see. Links, FIFOs and other
    non-files never belong to a writer and are unlinked unopened; directories other than
    staging directories are not ours and are left alone.
    """
    removed: list[Path] = []
    try:
        with os.scandir(tmp_dir) as it:
            items = list(it)
    except FileNotFoundError:
        return removed
    for item in items:
        path = Path(item.path)
        try:
            mode = item.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                gone = item.name.endswith(STAGING_SUFFIX) and _reap_if_dead(path, is_dir=True)
            elif stat.S_ISREG(mode):
                gone = _reap_if_dead(path, is_dir=False)
            else:
                os.unlink(path)
                gone = True
        except FileNotFoundError:
            continue
        except OSError as exc:  # housekeeping only: never fail the put, prune or clear
            log.warning("could not reclaim %s: %s", path, exc)
            continue
        if gone:
            removed.append(path)
    return removed


def remove_stale(directory: Path, *, older_than_s: float = STALE_QUARANTINE_S) -> list[Path]:
    """Delete files older than `older_than_s` in `directory` (quarantine/)."""
    removed = []
    now = time.time()
    try:
        with os.scandir(directory) as it:
            for item in it:
                try:
                    if item.is_dir(follow_symlinks=False):
                        continue  # a directory found at an entry path: left for a human
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
