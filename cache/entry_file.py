"""Reading entry files from an untrusted directory: never blocks, never follows a link, never
reads more than an entry can hold.

Anything at an entry path that is not a regular file (a FIFO, a socket, a device, a directory,
a symlink to /dev/zero or a symlink loop) is a bad entry: it is reported and, in a writable
layer, quarantined, but never opened for a blocking read. The path is `lstat`ed first, so a
device or FIFO is never even opened; it is then opened with O_NOFOLLOW | O_NONBLOCK and the
open handle is `fstat`ed, so a swap between the two checks is caught too. Its size is checked
before any byte is read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cache.entry import MAX_HEADER_BYTES, check_metadata, parse_header, verify_entry
from tessera_core.errors import CacheCorruptError

# The largest cubin + PTX our templates produce is 178 KiB (GEMM m128n128k64, 4 warps,
# 4 stages, sm_90: 43 KiB cubin + 135 KiB PTX; attention d128 is 154 KiB; measured with
# NVRTC 13.5). 64 MiB leaves a 350x margin for bigger tiles, new families and -lineinfo,
# and is still a bounded read: a sparse or hostile 1 TB "entry" is refused unread.
MAX_ENTRY_BYTES = 64 * 1024**2
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# What open(O_NOFOLLOW | O_NONBLOCK) answers for a link (ELOOP) or a socket (ENXIO).
_NOT_A_FILE_ERRNOS = (errno.ELOOP, errno.ENXIO, errno.EMLINK)
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
}


@dataclass(frozen=True, kw_only=True)
class EntryRead:
    """One entry file as read: verified contents, or the reason it is bad.

    `stat` is of the inode looked at (the open handle's, or the path's when it was never
    opened), so a quarantine moves exactly that one and never a fresh put's file.
    """

    stat: os.stat_result
    blob: bytes = b""
    metadata: dict[str, Any] | None = None
    cubin: bytes | None = None
    ptx: str | None = None
    problem: str | None = None


class _Refused(Exception):
    def __init__(self, reason: str, st: os.stat_result) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stat = st


def _kind_problem(st: os.stat_result) -> str | None:
    if stat.S_ISREG(st.st_mode):
        if st.st_size > MAX_ENTRY_BYTES:
            return f"{st.st_size} bytes, more than an entry can hold ({MAX_ENTRY_BYTES}); not read"
        return None
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
    return f"is {kind}, not a regular file"


@contextmanager
def _open_regular(path: Path) -> Iterator[tuple[IO[bytes], os.stat_result]]:
    """The open entry file and its fstat; _Refused if it is not a regular file of entry size.

    Raises FileNotFoundError when nothing is there, OSError when it cannot be opened.
    """
    seen = os.lstat(path)
    problem = _kind_problem(seen)
    if problem is not None:
        raise _Refused(problem, seen)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in _NOT_A_FILE_ERRNOS:  # swapped for a link or socket since the lstat
            raise _Refused(f"is not a regular file ({exc.strerror})", seen) from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        problem = _kind_problem(st)
        if problem is not None:
            raise _Refused(problem, st)
        yield f, st


def read_entry(path: Path, *, kernel_key: str) -> EntryRead | None:
    """The verified entry file at `path`, or why it is bad; None if there is no file.

    Reading it whole is what makes eviction harmless to readers: once read, an unlink of the
    file cannot take anything away. At most the fstat size + 1 bytes are read.

    Raises:
        OSError: it is there but cannot be read (permissions, I/O error).
    """
    try:
        with _open_regular(path) as (f, st):
            blob = f.read(st.st_size + 1)
    except FileNotFoundError:
        return None
    except _Refused as refused:
        return EntryRead(stat=refused.stat, problem=refused.reason)
    if len(blob) > st.st_size:
        return EntryRead(stat=st, problem="grew while being read (entries never change)")
    try:
        metadata, cubin, ptx = verify_entry(blob, path=str(path), kernel_key=kernel_key)
    except CacheCorruptError as exc:
        return EntryRead(stat=st, problem=exc.reason)
    return EntryRead(stat=st, blob=blob, metadata=metadata, cubin=cubin, ptx=ptx)


def read_entry_metadata(path: Path) -> EntryRead | None:
    """The checked metadata of the entry file at `path`, payloads unread; None if absent."""
    try:
        with _open_regular(path) as (f, st):
            try:
                start, meta_len, meta_sha = parse_header(f.read(MAX_HEADER_BYTES), str(path))
                if start + meta_len > st.st_size:
                    raise CacheCorruptError(str(path), "metadata runs past the end of the file")
                f.seek(start)
                metadata = check_metadata(f.read(meta_len), meta_sha, str(path))
            except CacheCorruptError as exc:
                return EntryRead(stat=st, problem=exc.reason)
    except FileNotFoundError:
        return None
    except _Refused as refused:
        return EntryRead(stat=refused.stat, problem=refused.reason)
    return EntryRead(stat=st, metadata=metadata)
