"""Atomic changes to entries/: publish (temp file, fsync, rename, fsync dir) and quarantine.

rename(2) replaces the directory entry in one step, so a reader opens either the old file or
the new one, never a mix. A writer holds its temp file flocked from creation until after the
rename (`temp_file`), so a writer killed at any point leaves at most an unlocked orphan in
tmp/, which no reader looks at and the next eviction removes (`eviction.reap_orphans`).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

from cache.layout import Layout
from cache.lock import hold, lock_fd
from tessera_core import config
from tessera_core.errors import TesseraError

log = logging.getLogger("tessera.cache")
T = TypeVar("T")
TMP_SUFFIX = ".tmp"
STAGING_SUFFIX = ".import"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_TRIES = 8


def _fresh_locked(directory: Path, stem: str, suffix: str, *, make_dir: bool) -> tuple[int, Path]:
    """A new file (or directory) in `directory`, open and flocked before anyone may rely on it.

    A reaper may lock and delete the name in the instant between its creation and our lock;
    then its link count is 0 and we take a new name.
    """
    for _ in range(_NAME_TRIES):
        path = directory / f"{stem}.{os.getpid()}.{secrets.token_hex(6)}{suffix}"
        if make_dir:
            path.mkdir(mode=0o700)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        else:
            fd = os.open(path, _CREATE_FLAGS, 0o644)
        lock_fd(fd)  # blocks only while a reaper that locked it first deletes it
        if os.fstat(fd).st_nlink > 0:
            return fd, path
        os.close(fd)
    raise TesseraError(f"{directory}: could not create a temp name in {_NAME_TRIES} tries")


@contextmanager
def temp_file(layout: Layout, stem: str) -> Iterator[tuple[IO[bytes], Path]]:
    """A fresh temp file in tmp/, locked while the block runs, removed after unless renamed."""
    fd, path = _fresh_locked(layout.tmp_dir, stem, TMP_SUFFIX, make_dir=False)
    with os.fdopen(fd, "wb") as f:
        try:
            yield f, path
        finally:
            path.unlink(missing_ok=True)  # before the close releases the lock; no-op if renamed


@contextmanager
def staging_dir(layout: Layout) -> Iterator[Path]:
    """A private directory in tmp/ (bundle import), locked while the block runs, then removed."""
    layout.make_dirs()
    fd, path = _fresh_locked(layout.tmp_dir, "bundle", STAGING_SUFFIX, make_dir=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


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
    with temp_file(layout, kernel_key) as (f, tmp):
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


def publish_staged(
    layout: Layout, staged: Mapping[str, Path], *, replace: bool, under_index_lock: Callable[[], T]
) -> tuple[list[str], T]:
    """Rename every staged file into entries/ under one hold of the index lock: all or none.

    Keys already present are kept unless `replace`. If any rename fails (a full directory
    included), every entry this call published is taken out again and the entries it replaced
    are put back, then the error propagates. Returns (keys published, `under_index_lock()`).
    """
    published: list[tuple[str, Path | None]] = []  # (key, backup of the entry it replaced)
    with hold(layout.index_lock_path):
        try:
            for key, path in sorted(staged.items()):
                target = layout.entry_path(key)
                backup = None
                if os.path.lexists(target):
                    if not replace:
                        continue
                    backup = path.with_name(f"{path.name}.replaced")
                    os.link(target, backup, follow_symlinks=False)
                os.replace(path, target)
                published.append((key, backup))
            fsync_dir(layout.entries_dir)
        except BaseException:
            _roll_back(layout, published)
            raise
        return [key for key, _ in published], under_index_lock()


def _roll_back(layout: Layout, published: list[tuple[str, Path | None]]) -> None:
    for key, backup in reversed(published):
        target = layout.entry_path(key)
        try:
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        except OSError as exc:
            log.error("could not roll back %s after a failed import: %s", target, exc)
    try:
        fsync_dir(layout.entries_dir)
    except OSError as exc:
        log.error("could not fsync %s after a failed import: %s", layout.entries_dir, exc)


def fsync_dir(path: os.PathLike[str] | str) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_locked(layout: Layout, path: Path) -> bool:
    """Remove whatever is at an entry path (the caller holds the index lock): unlink a file,
    move anything else (a directory) to quarantine/. False if it could not."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return False
    return _move_to_quarantine(layout, path)


def _move_to_quarantine(layout: Layout, path: Path) -> bool:
    try:
        layout.quarantine_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, layout.quarantine_dir / f"{path.name}.{time.time_ns()}.bad")
    except OSError as exc:
        log.warning("could not quarantine %s: %s", path, exc)
        return False
    log.warning("quarantined %s", path)
    return True


def quarantine(layout: Layout, path: Path, seen: os.stat_result) -> bool:
    """Move the bad file we looked at out of entries/, unless a new put replaced it since."""
    try:
        with hold(layout.index_lock_path):
            now = os.lstat(path)
            if (now.st_ino, now.st_dev) != (seen.st_ino, seen.st_dev):
                return False  # already replaced by a fresh put: leave that one alone
            return _move_to_quarantine(layout, path)
    except (OSError, TesseraError) as exc:
        log.warning("could not quarantine %s: %s", path, exc)
        return False
