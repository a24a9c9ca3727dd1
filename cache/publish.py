"""Atomic changes to entries/: publish (temp file, fsync, rename, fsync dir) and quarantine.

rename(2) replaces the directory entry in one step, so a reader opens either the old file or
the new one, never a mix; a writer killed at any point leaves at most an orphan in tmp/, which
no reader looks at and `prune` deletes once it is old (eviction.STALE_TMP_S).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from cache.layout import Layout
from cache.lock import hold
from tessera_core import config
from tessera_core.errors import TesseraError

log = logging.getLogger("tessera.cache")
T = TypeVar("T")


def publish(
    layout: Layout,
    kernel_key: str,
    parts: Sequence[bytes],
    *,
    under_index_lock: Callable[[], T],
) -> T:
    """Write `parts` as the entry file of `kernel_key`; then, still holding the index lock,
    run `under_index_lock` (eviction) and return its result."""
    layout.make_dirs()
    delay_s = config.CACHE_WRITE_DELAY_S.get() or 0.0
    tmp = layout.tmp_dir / f"{kernel_key}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            for i, part in enumerate(parts):
                if i and delay_s:  # test hook: a window to SIGKILL a writer mid-put
                    f.flush()
                    time.sleep(delay_s)
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        with hold(layout.index_lock_path):
            os.replace(tmp, layout.entry_path(kernel_key))
            fsync_dir(layout.entries_dir)
            return under_index_lock()
    finally:
        tmp.unlink(missing_ok=True)  # no-op after the rename


def fsync_dir(path: os.PathLike[str] | str) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine(layout: Layout, path: Path, seen: os.stat_result) -> bool:
    """Move the corrupt file we read out of entries/, unless a new put replaced it since."""
    try:
        with hold(layout.index_lock_path):
            now = os.stat(path)
            if (now.st_ino, now.st_dev) != (seen.st_ino, seen.st_dev):
                return False  # already replaced by a fresh put: leave that one alone
            layout.quarantine_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, layout.quarantine_dir / f"{path.name}.{time.time_ns()}.bad")
            log.warning("quarantined %s", path)
            return True
    except (OSError, TesseraError) as exc:
        log.warning("could not quarantine %s: %s", path, exc)
        return False
