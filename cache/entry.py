"""One cache entry: its single-file encoding (header, metadata JSON, cubin, PTX) and checks.

An entry file is

    TESSERA-KERNEL-ENTRY v<format> <metadata bytes> <metadata sha256>\\n
    <metadata JSON, UTF-8>   with "payloads": {"cubin"|"ptx": {"bytes", "sha256"} | null}
    <cubin bytes><PTX bytes, UTF-8>

so one rename publishes all payloads at once, and any flipped, missing or extra byte is
caught by a size or SHA-256 check before anything is returned.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cache.layout import FORMAT_VERSION
from cache.metadata import MAX_METADATA_BYTES, MetadataError, parse_metadata
from tessera_core.errors import CacheCorruptError
from tessera_core.types import stable_json

MAGIC = b"TESSERA-KERNEL-ENTRY"
MAX_HEADER_BYTES = 256
RESERVED_FIELDS = ("kernel_key", "format_version", "payloads")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, kw_only=True)
class KernelPayload:
    """What a build produces and `KernelCache.put` stores: cubin, PTX and metadata.

    Metadata should hold problem, config, objective ({"kind", "value"}), arch, nvrtc_version
    and template_hash; `arch` is required because validity checks need it.
    """

    cubin: bytes | None
    ptx: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """A verified entry as loaded: payloads in memory, so later eviction cannot affect it.

    `use_ptx` is True when the caller's device cannot run the cubin (or there is none) and
    the PTX must be JIT-compiled instead. `layer` is the cache root it came from.
    """

    kernel_key: str
    metadata: dict[str, Any]
    cubin: bytes | None
    ptx: str | None
    layer: Path
    read_only: bool
    size_bytes: int
    use_ptx: bool = False

    @property
    def arch(self) -> str:
        return str(self.metadata.get("arch", ""))

    @property
    def config(self) -> dict[str, Any] | None:
        return self.metadata.get("config")

    @property
    def objective(self) -> dict[str, Any] | None:
        return self.metadata.get("objective")


def encode_entry(
    kernel_key: str,
    *,
    cubin: bytes | None,
    ptx: str | None,
    metadata: Mapping[str, Any],
) -> tuple[bytes, bytes, bytes, dict[str, Any]]:
    """Encode an entry as (header+metadata, cubin bytes, PTX bytes, stored metadata)."""
    if cubin is None and ptx is None:
        raise ValueError(f"{kernel_key}: an entry needs a cubin, a PTX or both")
    if "arch" not in metadata:
        raise ValueError(f"{kernel_key}: metadata must record 'arch' (e.g. 'sm_90')")
    ptx_bytes = ptx.encode() if ptx is not None else b""
    cubin_bytes = bytes(cubin) if cubin is not None else b""
    stored = {k: v for k, v in metadata.items() if k not in RESERVED_FIELDS}
    stored.setdefault("created_at", time.time())
    stored["kernel_key"] = kernel_key
    stored["format_version"] = FORMAT_VERSION
    stored["payloads"] = {
        "cubin": None
        if cubin is None
        else {"bytes": len(cubin_bytes), "sha256": sha256_hex(cubin_bytes)},
        "ptx": None if ptx is None else {"bytes": len(ptx_bytes), "sha256": sha256_hex(ptx_bytes)},
    }
    meta_bytes = stable_json(stored).encode()
    try:  # what a put writes, a get must read: refuse NaN, deep nesting, wrong types here
        parse_metadata(meta_bytes)
    except MetadataError as exc:
        raise ValueError(f"{kernel_key}: metadata cannot be stored: {exc}") from None
    header = b"%s v%d %d %s\n" % (
        MAGIC,
        FORMAT_VERSION,
        len(meta_bytes),
        sha256_hex(meta_bytes).encode(),
    )
    return header + meta_bytes, cubin_bytes, ptx_bytes, stored


def parse_header(head: bytes, path: str) -> tuple[int, int, str]:
    """(offset of metadata, metadata length, metadata sha256) from the header line."""
    end = head.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise CacheCorruptError(path, "no header line (truncated or not an entry file)")
    parts = head[:end].split(b" ")
    if len(parts) != 4 or parts[0] != MAGIC:
        raise CacheCorruptError(path, f"bad header line {bytes(head[: min(end, 64)])!r}")
    if parts[1] != b"v%d" % FORMAT_VERSION:
        raise CacheCorruptError(path, f"format {parts[1]!r}, expected v{FORMAT_VERSION}")
    if not parts[2].isdigit() or int(parts[2]) > MAX_METADATA_BYTES:
        raise CacheCorruptError(path, f"bad metadata length {parts[2][:20]!r} in header")
    return end + 1, int(parts[2]), parts[3].decode("ascii", "replace")


def check_metadata(meta_bytes: bytes, meta_sha: str, path: str) -> dict[str, Any]:
    """The parsed metadata if its checksum and every field check out, else CacheCorruptError."""
    if sha256_hex(meta_bytes) != meta_sha:
        raise CacheCorruptError(path, "metadata SHA-256 mismatch (corrupt or truncated)")
    try:
        return parse_metadata(meta_bytes)
    except MetadataError as exc:
        raise CacheCorruptError(path, str(exc)) from None


def decode_entry(blob: bytes, *, path: str) -> tuple[dict[str, Any], bytes | None, str | None]:
    """Verify and split an entry file's bytes into (metadata, cubin, ptx).

    Raises:
        CacheCorruptError: any size, checksum, header or metadata problem.
    """
    start, meta_len, meta_sha = parse_header(blob, path)
    metadata = check_metadata(blob[start : start + meta_len], meta_sha, path)
    records = metadata["payloads"]  # checked by parse_metadata: sizes and sha256 are valid
    cubin_size = records["cubin"]["bytes"] if records["cubin"] is not None else 0
    ptx_size = records["ptx"]["bytes"] if records["ptx"] is not None else 0
    body = start + meta_len
    if len(blob) != body + cubin_size + ptx_size:
        raise CacheCorruptError(
            path,
            f"{len(blob)} bytes on disk, metadata says {body + cubin_size + ptx_size} (truncated?)",
        )
    payloads: dict[str, bytes | None] = {}
    for name, lo, hi in (
        ("cubin", body, body + cubin_size),
        ("ptx", body + cubin_size, body + cubin_size + ptx_size),
    ):
        record = records[name]
        if record is None:
            payloads[name] = None
            continue
        data = blob[lo:hi]
        if sha256_hex(data) != record["sha256"]:
            raise CacheCorruptError(path, f"{name} SHA-256 mismatch")
        payloads[name] = data
    try:
        ptx = payloads["ptx"].decode() if payloads["ptx"] is not None else None
    except UnicodeDecodeError:
        raise CacheCorruptError(path, "PTX is not UTF-8") from None
    return metadata, payloads["cubin"], ptx


def verify_entry(
    blob: bytes, *, path: str, kernel_key: str
) -> tuple[dict[str, Any], bytes | None, str | None]:
    """`decode_entry`, and check the entry records `kernel_key` (a renamed file is not a hit)."""
    metadata, cubin, ptx = decode_entry(blob, path=path)
    if metadata.get("kernel_key") != kernel_key:
        raise CacheCorruptError(
            path, f"records key {metadata.get('kernel_key')!r}, not {kernel_key!r}"
        )
    return metadata, cubin, ptx
