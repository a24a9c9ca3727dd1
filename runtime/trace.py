"""The call trace: an in-memory ring buffer plus an optional JSONL file shared by processes."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import deque
from pathlib import Path

from filelock import FileLock

from autotune.hotspots import TraceRecord
from runtime.signature import Signature
from tessera_core.types import TileConfig

log = logging.getLogger("tessera.runtime.trace")

# What the hot path appends: a plain tuple, materialized into a TraceRecord only when read.
# (time_s, event, signature, tier, wall_ms, kernel_key, config, ok, detail)
_Row = tuple[float, str, Signature, int, float, "str | None", "TileConfig | None", bool, str]


class Tracer:
    """Keeps the last `buffer_records` records and appends every record to `path` if given.

    The file is written in batches of `flush_records` lines, each batch one O_APPEND write
    under an inter-process file lock, so several processes can trace to the same file. A
    line left unfinished by a writer that died mid-write is terminated before the next batch,
    so it costs that one record only. A trace file that cannot be written (full or read-only
    disk) never fails a call: the batch is dropped with a warning and counted in `dropped`.
    """

    def __init__(
        self, *, buffer_records: int, path: Path | None = None, flush_records: int = 1
    ) -> None:
        self._ring: deque[_Row] = deque(maxlen=buffer_records)
        self._path = path
        self._flush_records = flush_records
        self._pending: list[_Row] = []
        self._lock = threading.Lock()  # the tuning worker traces too
        self._write_lock = threading.Lock()  # batches reach the file in the order taken
        self._file_lock = FileLock(f"{path}.lock") if path is not None else None
        self._atexit = False
        self.dropped = 0  # records that could not be written to the file
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if flush_records > 1:  # batched records must not be lost at interpreter exit
                atexit.register(self.flush)
                self._atexit = True

    def append(
        self,
        time_s: float,
        event: str,
        signature: Signature,
        tier: int,
        wall_ms: float,
        kernel_key: str | None = None,
        config: TileConfig | None = None,
        ok: bool = True,
        detail: str = "",
    ) -> None:
        row = (time_s, event, signature, tier, wall_ms, kernel_key, config, ok, detail)
        self._ring.append(row)
        if self._path is not None:
            with self._lock:
                self._pending.append(row)
                due = len(self._pending) >= self._flush_records
            if due:
                self.flush()

    def history(self) -> list[TraceRecord]:
        """The buffered records, oldest first."""
        return [self._record(row) for row in list(self._ring)]

    def flush(self) -> None:
        """Append every pending record to the trace file (no-op without one)."""
        if self._path is None or self._file_lock is None:
            return
        with self._write_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows:
                return
            data = "".join(self._record(row).to_json() + "\n" for row in rows).encode()
            try:
                with self._file_lock:
                    _append(self._path, data)
            except OSError as exc:
                self.dropped += len(rows)
                log.warning(
                    "trace %s: could not write %d record(s) (%s); %d dropped so far",
                    self._path,
                    len(rows),
                    exc,
                    self.dropped,
                )

    def close(self) -> None:
        """Flush, and drop the interpreter-exit hook (which would keep this tracer alive).

        Records appended after this (a Runtime used after `close()`) are written at once.
        """
        self._flush_records = 1
        self.flush()
        if self._atexit:
            atexit.unregister(self.flush)
            self._atexit = False

    def _record(self, row: _Row) -> TraceRecord:
        time_s, event, sig, tier, wall_ms, kernel_key, config, ok, detail = row
        return TraceRecord(
            time_s=time_s,
            event=event,
            op=sig.op,
            dtype=sig.dtype,
            shape=sig.shape,
            causal=sig.causal,
            scale=sig.scale,
            layout=sig.layout,
            tier=int(tier),
            wall_ms=wall_ms,
            kernel_key=kernel_key,
            config=None if config is None else config.to_dict(),
            ok=ok,
            detail=detail,
            pid=os.getpid(),  # read per record: a forked child traces as itself
        )


def _append(path: Path, data: bytes) -> None:
    """Append `data` to `path` with O_APPEND writes (the caller holds the file lock)."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a writer died mid-line: end its torn line, keep ours whole
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
