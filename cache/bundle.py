"""Bundles: a tar.gz of entry files plus a manifest, to ship a pre-warmed cache with a model.

    manifest.json                  {"format", "bundle_version", "cache_format_version",
                                    "created_at", "entries": [{"kernel_key", "file", "bytes",
                                    "sha256", "arch", "nvrtc_version", "template_hash"}]}
    entries/<kernel_key>.kernel    entry files, byte for byte as in the cache

Import never extracts: it reads every member into memory, accepts only regular files named
exactly `manifest.json` or `entries/<valid key>.kernel` (which rules out absolute paths,
`..`, links, devices and directories), checks every size and SHA-256 against the manifest
and every entry's own checksums, and only if all of it passes publishes the entries with
the cache's atomic put. A bundle with any problem changes nothing and raises BundleError.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cache.entry import sha256_hex, verify_entry
from cache.layout import ENTRY_SUFFIX, FORMAT_VERSION, check_key
from cache.store import KernelCache
from tessera_core.errors import BundleError, CacheCorruptError, InvalidCacheKeyError

BUNDLE_FORMAT = "tessera-kernel-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
MAX_MEMBER_BYTES = 512 * 1024**2  # no kernel entry is near this; stops decompression bombs
MAX_TOTAL_BYTES = 4 * 1024**3
# Headers cost no payload bytes but memory (tarfile keeps every TarInfo, each refused one adds
# a problem): a few MB of gzip can hold millions of them. No real bundle comes near this.
MAX_MEMBERS = 100_000
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
    """Write the entries `keys` (default: every key in the search path) to a tar.gz bundle.

    Returns the exported keys. Raises BundleError if a requested key has no valid entry.
    """
    wanted = sorted(set(keys)) if keys is not None else cache.list_keys()
    files: list[tuple[str, bytes]] = []
    records: list[dict[str, Any]] = []
    missing = []
    for key in wanted:
        found = cache.read_entry_file(key)
        if found is None:
            missing.append(f"{key}: no valid entry in {[str(p) for p in cache.search_path.all()]}")
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
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    now = int(time.time())
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode()), *files]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.mtime = now
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return [r["kernel_key"] for r in records]


def _read_members(bundle: Path, problems: list[str]) -> dict[str, bytes]:
    """Every acceptable member's bytes; each refused member adds a problem."""
    contents: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    problems.append(f"more than {MAX_MEMBERS} members; not a kernel bundle")
                    break
                name = member.name
                if member.issym() or member.islnk():
                    problems.append(f"{name!r}: is a link (to {member.linkname!r})")
                    continue
                if not member.isreg():
                    problems.append(f"{name!r}: is not a regular file (type {member.type!r})")
                    continue
                match = _ENTRY_MEMBER_RE.fullmatch(name)
                if name != MANIFEST and match is None:
                    problems.append(
                        f"{name!r}: unexpected member (absolute path, '..' or unknown name); "
                        f"only {MANIFEST} and entries/<kernel_key>{ENTRY_SUFFIX} are allowed"
                    )
                    continue
                if match is not None:
                    try:
                        check_key(match.group(1))
                    except InvalidCacheKeyError as exc:
                        problems.append(f"{name!r}: {exc}")
                        continue
                if name in contents:
                    problems.append(f"{name!r}: appears twice")
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    problems.append(
                        f"{name!r}: too large ({member.size} bytes; at most {MAX_MEMBER_BYTES})"
                    )
                    continue
                total += member.size
                if total > MAX_TOTAL_BYTES:
                    problems.append(f"members add up to more than {MAX_TOTAL_BYTES} bytes")
                    break  # nothing after this could be accepted; stop decompressing
                extracted = tar.extractfile(member)
                if extracted is None:
                    problems.append(f"{name!r}: unreadable")
                    continue
                contents[name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append(f"not a readable tar.gz: {exc}")
    return contents


def _check_manifest(contents: dict[str, bytes], problems: list[str]) -> dict[str, bytes]:
    """key -> verified entry bytes, if the manifest and every entry check out."""
    if MANIFEST not in contents:
        problems.append(f"no {MANIFEST}")
        return {}
    try:
        manifest = json.loads(contents[MANIFEST])
        records = manifest["entries"]
        if manifest.get("format") != BUNDLE_FORMAT or not isinstance(records, list):
            raise ValueError(f"format {manifest.get('format')!r}")
        if manifest.get("cache_format_version") != FORMAT_VERSION:
            raise ValueError(
                f"cache format {manifest.get('cache_format_version')!r}, "
                f"this version reads {FORMAT_VERSION}"
            )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        problems.append(f"{MANIFEST}: unusable: {exc}")
        return {}
    verified: dict[str, bytes] = {}
    listed = set()
    for record in records:
        try:
            key = check_key(record["kernel_key"])
            name = _member_name(key)
            sha, size = record["sha256"], record["bytes"]
        except (KeyError, TypeError, InvalidCacheKeyError) as exc:
            problems.append(f"{MANIFEST}: bad record {record!r}: {exc}")
            continue
        listed.add(name)
        if record.get("file") != name:
            problems.append(f"{key}: manifest file {record.get('file')!r}, expected {name!r}")
            continue
        blob = contents.get(name)
        if blob is None:
            problems.append(f"{name}: listed in the manifest but not in the bundle")
            continue
        if len(blob) != size or sha256_hex(blob) != sha:
            problems.append(f"{name}: size or SHA-256 does not match the manifest")
            continue
        try:
            verify_entry(blob, path=name, kernel_key=key)
        except CacheCorruptError as exc:
            problems.append(f"{name}: {exc.reason}")
            continue
        verified[key] = blob
    for name in sorted(set(contents) - listed - {MANIFEST}):
        problems.append(f"{name}: in the bundle but not in the manifest")
    return verified


def import_bundle(
    bundle_path: str | os.PathLike[str], cache: KernelCache, *, replace: bool = False
) -> ImportReport:
    """Verify a bundle completely, then publish its entries into `cache`'s writable directory.

    Args:
        replace: overwrite entries the cache already has (default: keep them).

    Raises:
        BundleError: listing every problem found; nothing was written.
    """
    bundle = Path(bundle_path)
    problems: list[str] = []
    contents = _read_members(bundle, problems)
    verified = _check_manifest(contents, problems) if not problems else {}
    if problems:
        raise BundleError(str(bundle), problems)
    report = ImportReport()
    existing = set(cache.list_keys(writable_only=True)) if not replace else set()
    bundled = frozenset(verified)  # one entry's eviction must never take another's place
    for key, blob in sorted(verified.items()):
        if key in existing:
            report.skipped.append(key)
            continue
        cache.publish_file(key, (blob,), protect=bundled)
        report.imported.append(key)
    return report
