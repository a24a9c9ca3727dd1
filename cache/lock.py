"""Inter-process locks of the cache: OS file locks that die with their holder.

We use filelock's UnixFileLock (fcntl.flock) on POSIX, never a soft (lock-file-exists) lock:
the kernel drops an flock when its holder exits for any reason, SIGKILL included, so a killed
process can never leave a lock that blocks others. The lock files themselves stay on disk,
empty and harmless; they are never deleted, because unlinking a lock file that a live process
holds would let a second process lock a new file of the same name.

Temp files are locked the same way, through their own descriptor (`lock_fd`): a writer holds
its temp file locked while it lives, so a temp file anyone can lock (`try_lock_fd`) is an
orphan of a dead writer. The cache needs POSIX flock (Linux, macOS).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from tessera_core.errors import CacheLockError

INDEX_LOCK_TIMEOUT_S = 60.0

_LockClass: type[filelock.BaseFileLock] = filelock.UnixFileLock


def file_lock(path: Path) -> filelock.BaseFileLock:
    """An OS-level lock on `path` (created if missing); not reentrant across instances."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return _LockClass(str(path))


@contextmanager
def hold(path: Path, *, timeout_s: float = INDEX_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock at `path` for the block; CacheLockError after `timeout_s`."""
    lock = file_lock(path)
    try:
        lock.acquire(timeout=timeout_s)
    except filelock.Timeout:
        raise CacheLockError(
            f"{path}: held by another process for more than {timeout_s:.0f} s; "
            "a process still alive holds it (locks of dead processes are released by the OS)"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def try_hold(path: Path, *, timeout_s: float) -> Iterator[bool]:
    """Hold the lock at `path` for the block if it frees within `timeout_s`; yield whether held."""
    lock = file_lock(path)
    try:
        lock.acquire(timeout=timeout_s)
        locked = True
    except filelock.Timeout:
        locked = False
    try:
        yield locked
    finally:
        if locked:
            lock.release()


def lock_fd(fd: int) -> None:
    """Lock an open file for as long as it stays open (or the process lives)."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def try_lock_fd(fd: int) -> bool:
    """Lock an open file if no one holds it: True means whoever created it is gone."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
