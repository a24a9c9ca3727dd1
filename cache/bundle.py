"""Bundles: a tar.gz of entry files plus a manifest, to ship a pre-warmed cache with a model.

    manifest.json                  first member: {"format", "bundle_version",
                                   "cache_format_version", "created_at", "entries":
                                   [{"kernel_key", "file", "bytes", "sha256", "arch",
                                     "nvrtc_version", "template_hash"}]}
    entries/<kernel_key>.kernel    entry files, byte for byte as in the cache

Import never extracts and never trusts a header: it streams the tar itself
(cache/tar_stream.py: no extended header above a few KiB, decompressed bytes capped by what
the manifest announces), reads the manifest first, and refuses, unread, any member that is
not a regular file listed in it with the size it lists (which rules out absolute paths,
`..`, links, devices and directories). Each entry is checked against the manifest's SHA-256
and its own checksums, then staged in the target cache's tmp/; only when every entry is
staged are they renamed into entries/ together, under one hold of the index lock, and a
failure there (a full disk included) takes back what was published. A bundle with any
problem changes nothing and raises BundleError naming the problem and the path.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import secrets
import stat
import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cache.entry import sha256_hex, verify_entry
from cache.entry_file import MAX_ENTRY_BYTES
from cache.layout import ENTRY_SUFFIX, FORMAT_VERSION, check_key
from cache.metadata import MetadataError, parse_json
from cache.publish import fsync_dir
from cache.store import KernelCache
from cache.tar_stream import (
    BLOCK,
    MAX_EXTENDED_HEADER_BYTES,
    MAX_EXTENDED_HEADERS,
    Member,
    TarFormatError,
    TarReader,
)
from tessera_core.errors import BundleError, CacheCorruptError, InvalidCacheKeyError

log = logging.getLogger("tessera.cache")

BUNDLE_FORMAT = "tessera-kernel-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
MAX_MEMBER_BYTES = MAX_ENTRY_BYTES  # an entry file the cache would read
MAX_TOTAL_BYTES = 4 * 1024**3
MAX_MANIFEST_BYTES = 16 * 1024**2  # about 50,000 records
MAX_MEMBERS = 10_000  # entries in one bundle; a model ships tens
# Decompressed bytes a member may take besides its data: its header block, its extended
# headers and the padding of each to a 512-byte block.
_MEMBER_OVERHEAD_BYTES = MAX_EXTENDED_HEADERS * (MAX_EXTENDED_HEADER_BYTES + 2 * BLOCK) + 2 * BLOCK
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ENTRY_MEMBER_RE = re.compile(r"entries/([^/]+)" + re.escape(ENTRY_SUFFIX))


@dataclass(frozen=True, kw_only=True)
class ImportReport:
    """What an import did: keys published, and keys kept because the target had them."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _member_name(kernel_key: str) -> str:
    return f"entries/{kernel_key}{ENTRY_SUFFIX}"


def export_bundle(
    cache: KernelCache, out_path: str | os.PathLike[str], *, keys: Iterable[str] | None = None
) -> list[str]:
    """Write the entries `keys` (default: every good entry in the search path) to a bundle.

    Returns the exported keys. Raises BundleError if a requested key has no valid entry;
    with the default, a bad entry is skipped with a warning (and quarantined if writable).
    """
    wanted = sorted({check_key(k) for k in keys}) if keys is not None else cache.list_keys()
    files: list[tuple[str, bytes]] = []
    records: list[dict[str, Any]] = []
    missing = []
    for key in wanted:
        found = cache.read_entry_file(key)
        if found is None:
            if keys is None:
                log.warning("export: skipping %s, no valid entry", key)
            else:
                missing.append(
                    f"{key}: no valid entry in {[str(p) for p in cache.search_path.all()]}"
                )
            continue
        blob, _, metadata = found
        name = _member_name(key)
        files.append((name, blob))
        records.append(
            {
                "kernel_key": key,
                "file": name,
                "bytes": len(blob),
                "sha256": sha256_hex(blob),
                "arch": metadata.get("arch"),
                "nvrtc_version": metadata.get("nvrtc_version"),
                "template_hash": metadata.get("template_hash"),
            }
        )
    if missing:
        raise BundleError(str(out_path), missing)
    manifest = {
        "format": BUNDLE_FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "cache_format_version": FORMAT_VERSION,
        "created_at": time.time(),
        "entries": records,
    }
    members = [(MANIFEST, json.dumps(manifest, indent=1).encode()), *files]
    with _fresh_output(Path(out_path)) as (raw, tmp):
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            now = int(time.time())
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, now
                tar.addfile(info, io.BytesIO(data))
        raw.flush()
        os.fsync(raw.fileno())
        os.replace(tmp, out_path)  # replaces a link at out_path itself, never its target
    return [r["kernel_key"] for r in records]


@contextmanager
def _fresh_output(out: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A new temp file beside `out`, created with O_EXCL | O_NOFOLLOW under an unguessable
    name (never an existing file nor a planted link); removed unless renamed."""
    for _ in range(8):
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o644)
            break
        except FileExistsError:
            continue
    else:
        raise BundleError(str(out), [f"could not create a fresh temp file beside {out}"])
    try:
        with os.fdopen(fd, "wb") as raw:
            yield raw, tmp
    finally:
        tmp.unlink(missing_ok=True)


# -------------------------------------------------------------------------------- import


class _Refused(Exception):
    """The bundle is refused; args are the problems."""


@contextmanager
def _open_bundle(bundle: Path) -> Iterator[IO[bytes]]:
    """The bundle file, opened without blocking and only if it is a regular file."""
    try:
        fd = os.open(bundle, _OPEN_FLAGS)
    except OSError as exc:
        raise _Refused(f"not a readable tar.gz: {exc}") from None
    with os.fdopen(fd, "rb") as raw:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Refused("not a readable tar.gz: not a regular file")
        yield raw


def _record_problem(record: Any, seen: set[str]) -> str | None:
    if not isinstance(record, dict):
        return f"{MANIFEST}: bad record {str(record)[:80]!r}: not an object"
    try:
        key = check_key(record.get("kernel_key"))  # type: ignore[arg-type]
    except InvalidCacheKeyError as exc:
        return f"{MANIFEST}: bad record: {exc}"
    name, size, sha = _member_name(key), record.get("bytes"), record.get("sha256")
    if key in seen:
        return f"{key}: listed twice in {MANIFEST}"
    seen.add(key)
    if record.get("file") != name:
        return f"{key}: manifest file {str(record.get('file'))[:80]!r}, expected {name!r}"
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return f"{name}: manifest has no valid size"
    if size > MAX_MEMBER_BYTES:
        return f"{name}: too large ({size} bytes; at most {MAX_MEMBER_BYTES})"
    if not isinstance(sha, str) or len(sha) != 64:
        return f"{name}: manifest has no valid sha256"
    return None


def _read_manifest(reader: TarReader) -> dict[str, dict[str, Any]]:
    """member name -> manifest record, from the first member; _Refused if anything is off."""
    member = reader.next_member()
    if member is None or member.name != MANIFEST or not member.is_regular:
        found = "nothing" if member is None else repr(member.name)
        raise _Refused(f"first member is {found}; a kernel bundle starts with {MANIFEST}")
    if member.size > MAX_MANIFEST_BYTES:
        raise _Refused(f"{MANIFEST}: {member.size} bytes; at most {MAX_MANIFEST_BYTES}")
    try:
        manifest = parse_json(reader.read_data(member))
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise MetadataError(f"format is not {BUNDLE_FORMAT!r}")
        if manifest.get("cache_format_version") != FORMAT_VERSION:
            raise MetadataError(
                f"cache format {manifest.get('cache_format_version')!r}, "
                f"this version reads {FORMAT_VERSION}"
            )
        records = manifest.get("entries")
        if not isinstance(records, list):
            raise MetadataError("'entries' is not a list")
    except MetadataError as exc:
        raise _Refused(f"{MANIFEST}: unusable: {exc}") from None
    if len(records) > MAX_MEMBERS:
        raise _Refused(f"{MANIFEST}: more than {MAX_MEMBERS} entries; not a kernel bundle")
    seen: set[str] = set()
    problems = [p for p in (_record_problem(r, seen) for r in records) if p is not None]
    if problems:
        raise _Refused(*problems)
    if sum(r["bytes"] for r in records) > MAX_TOTAL_BYTES:
        raise _Refused(f"members add up to more than {MAX_TOTAL_BYTES} bytes")
    return {r["file"]: r for r in records}


def _member_problem(
    member: Member, listed: dict[str, dict[str, Any]], done: set[str]
) -> str | None:
    """Why `member` is refused before its data is read, or None."""
    name = member.name
    if member.is_link:
        return f"{name!r}: is a link (to {member.linkname!r})"
    if not member.is_regular:
        return f"{name!r}: is not a regular file (type {member.type!r})"
    if name in done or name == MANIFEST:
        return f"{name!r}: appears twice"
    match = _ENTRY_MEMBER_RE.fullmatch(name)
    if match is None:
        return (
            f"{name!r}: unexpected member (absolute path, '..' or unknown name); "
            f"only {MANIFEST} and entries/<kernel_key>{ENTRY_SUFFIX} are allowed"
        )
    if name not in listed:
        return f"{name}: in the bundle but not in the manifest; refused unread"
    if member.size != listed[name]["bytes"]:
        return (
            f"{name}: {member.size} bytes in its header, the manifest says {listed[name]['bytes']}"
        )
    return None


def _stage(staging: Path, key: str, blob: bytes) -> Path:
    path = staging / f"{key}{ENTRY_SUFFIX}"
    try:
        fd = os.open(path, _CREATE_FLAGS, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(fd)
    except OSError as exc:  # a full disk: name the file it happened to
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    return path


def _stage_members(
    reader: TarReader, listed: dict[str, dict[str, Any]], staging: Path
) -> dict[str, Path]:
    """key -> staged entry file, every one verified; _Refused listing the problems if any."""
    problems: list[str] = []
    staged: dict[str, Path] = {}
    announced = sum(r["bytes"] + _MEMBER_OVERHEAD_BYTES for r in listed.values()) + 2 * BLOCK
    reader.limit_bytes = min(MAX_TOTAL_BYTES, reader.consumed_bytes + announced)
    while (member := reader.next_member()) is not None:
        problem = _member_problem(member, listed, {_member_name(k) for k in staged})
        if problem is not None:
            problems.append(problem)
            break  # refused unread: what follows could only be reached by reading it
        blob = reader.read_data(member)
        record = listed[member.name]
        key = record["kernel_key"]
        if sha256_hex(blob) != record["sha256"]:
            problems.append(f"{member.name}: size or SHA-256 does not match the manifest")
            continue
        try:
            verify_entry(blob, path=member.name, kernel_key=key)
        except CacheCorruptError as exc:
            problems.append(f"{member.name}: {exc.reason}")
            continue
        staged[key] = _stage(staging, key, blob)
    if not problems:
        problems = [
            f"{name}: listed in the manifest but not in the bundle"
            for name, r in sorted(listed.items())
            if r["kernel_key"] not in staged
        ]
    if problems:
        raise _Refused(*problems)
    return staged


def import_bundle(
    bundle_path: str | os.PathLike[str], cache: KernelCache, *, replace: bool = False
) -> ImportReport:
    """Verify a bundle completely, then publish all its entries into `cache`'s writable
    directory at once.

    Args:
        replace: overwrite entries the cache already has (default: keep them).

    Raises:
        BundleError: naming every problem found (or the error that stopped the publish, and
            its path); nothing of the bundle was left in the cache.
    """
    bundle = Path(bundle_path)
    try:
        with _open_bundle(bundle) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            reader = TarReader(stream, limit_bytes=MAX_TOTAL_BYTES)
            listed = _read_manifest(reader)  # before anything is created in the cache
            with cache.staging_dir() as staging:
                staged = _stage_members(reader, listed, staging)
                fsync_dir(staging)
                published = cache.publish_staged(staged, replace=replace)
    except _Refused as refused:
        raise BundleError(str(bundle), [str(p) for p in refused.args]) from None
    except TarFormatError as exc:
        raise BundleError(str(bundle), [f"not a readable kernel bundle: {exc}"]) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BundleError(str(bundle), [f"not a readable tar.gz: {exc}"]) from None
    except OSError as exc:  # writing the cache (a full disk), or reading the bundle
        where = f": {exc.filename}" if exc.filename else ""
        raise BundleError(
            str(bundle), [f"{exc.strerror or exc}{where} (into {cache.search_path.writable})"]
        ) from None
    return ImportReport(imported=sorted(published), skipped=sorted(set(staged) - set(published)))
