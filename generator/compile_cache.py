"""A content-addressed on-disk cache of NVRTC results, so the same source is never compiled twice.

Why not cuda.core's FileStreamProgramCache: a hit there returns only the binary, losing the
ptxas report the resources come from, it keeps one target per entry (we need cubin and PTX
from one NVRTC run), and make_program_cache_key refuses include_path options. Each entry
here is one JSON file holding cubin, PTX, the NVRTC/ptxas log and the options, keyed by a
SHA-256 over every input that changes the binary (see `compile_key`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tessera_core.config import default_compile_cache_dir
from tessera_core.types import stable_json

# Bump when the entry layout or the meaning of a key ingredient changes; old entries then miss.
CACHE_FORMAT_VERSION = 1


def compile_key(
    *,
    source: str,
    arch: str,
    options: Sequence[str],
    nvrtc_version: str,
    headers_digest: str,
) -> str:
    """SHA-256 over source, arch, options, NVRTC version, header contents and format version.

    `options` should leave out include-directory paths: where a header lives does not change
    the binary, its contents do, and those are in `headers_digest`.
    """
    ingredients = {
        "format": CACHE_FORMAT_VERSION,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "arch": arch,
        "options": list(options),
        "nvrtc": nvrtc_version,
        "headers": headers_digest,
    }
    return hashlib.sha256(stable_json(ingredients).encode()).hexdigest()


@dataclass(frozen=True)
class CompileRecord:
    """What one NVRTC run produced: both binaries and the log the resources are read from.

    A failed run is recorded too (`error` set, no binaries), so a source NVRTC rejected is
    not compiled again either.
    """

    cubin: bytes
    ptx: str
    log: str
    options: tuple[str, ...]
    arch: str
    nvrtc_version: str
    compile_time_s: float
    error: str | None = None


class CompileCache:
    """One JSON file per key under `root`; writes are atomic (temp file + rename).

    Concurrent writers of the same key write identical content, so the last rename wins
    harmlessly; a torn or corrupted file reads as a miss and is removed.
    """

    def __init__(self, *, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_compile_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> CompileRecord | None:
        path = self.path(key)
        try:
            entry = json.loads(path.read_text())
            if entry["format"] != CACHE_FORMAT_VERSION:
                return None
            cubin = base64.b64decode(entry["cubin_b64"], validate=True)
            if hashlib.sha256(cubin).hexdigest() != entry["cubin_sha256"]:
                raise ValueError("cubin checksum mismatch")
            return CompileRecord(
                cubin=cubin,
                ptx=entry["ptx"],
                log=entry["log"],
                options=tuple(entry["options"]),
                arch=entry["arch"],
                nvrtc_version=entry["nvrtc_version"],
                compile_time_s=float(entry["compile_time_s"]),
                error=entry["error"],
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # Corrupted or torn entry: drop it so the next compile rewrites it.
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def put(self, key: str, record: CompileRecord) -> None:
        entry = {
            "format": CACHE_FORMAT_VERSION,
            "cubin_b64": base64.b64encode(record.cubin).decode(),
            "cubin_sha256": hashlib.sha256(record.cubin).hexdigest(),
            "ptx": record.ptx,
            "log": record.log,
            "options": list(record.options),
            "arch": record.arch,
            "nvrtc_version": record.nvrtc_version,
            "compile_time_s": record.compile_time_s,
            "error": record.error,
        }
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(entry, handle)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
