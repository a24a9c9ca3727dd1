"""Metadata that parses badly in any way is a bad entry: a miss and a quarantine, never a raise.

Every crafted entry below carries a valid header and metadata checksum, so only the metadata
checks stand between it and a caller.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cache_workers import metadata_for, payload_for, put_version

from cache import KernelCache
from cache.__main__ import main
from cache.entry import decode_entry, encode_entry
from tessera_core.errors import CacheCorruptError, CacheMissError

KEY = "gemm.fp16.m64.n64.k64.sm_80"


def _craft(meta_bytes: bytes, payload: bytes = b"") -> bytes:
    """An entry file around `meta_bytes` whose header and checksum are right."""
    digest = hashlib.sha256(meta_bytes).hexdigest().encode()
    return b"TESSERA-KERNEL-ENTRY v1 %d %s\n" % (len(meta_bytes), digest) + meta_bytes + payload


def _real() -> tuple[dict[str, Any], bytes]:
    """The stored metadata of a real entry and its payload bytes (cubin + PTX)."""
    cubin, ptx = payload_for(KEY, "v1")
    _, c, p, stored = encode_entry(KEY, cubin=cubin, ptx=ptx, metadata=metadata_for("v1"))
    return stored, c + p


def _with(change: dict[str, Any]) -> bytes:
    stored, payload = _real()
    return _craft(json.dumps({**stored, **change}).encode(), payload)


def _nested(depth: int) -> bytes:
    stored, payload = _real()
    body = json.dumps(stored)[:-1]
    deep = "[" * depth + "]" * depth
    return _craft(f'{body}, "deep": {deep}}}'.encode(), payload)


def _raw_field(name: str, literal: str) -> bytes:
    stored, payload = _real()
    body = json.dumps(stored)[:-1]
    return _craft(f'{body}, "{name}": {literal}}}'.encode(), payload)


BAD_METADATA = {
    "nested-100000": (lambda: _nested(100_000), "nested too deeply"),
    "nested-50": (lambda: _nested(50), "nested more than"),
    "huge-int": (lambda: _raw_field("created_at", "1" * 5000), "integer of 5000 digits"),
    "big-int": (lambda: _raw_field("created_at", "1" * 25), "integer of 25 digits"),
    "nan": (lambda: _raw_field("created_at", "NaN"), "non-finite"),
    "infinity": (lambda: _raw_field("created_at", "-Infinity"), "non-finite"),
    "overflowing-float": (lambda: _raw_field("created_at", "1e999"), "non-finite"),
    "arch-not-str": (lambda: _with({"arch": 80}), "'arch'"),
    "config-not-object": (lambda: _with({"config": "m64n64"}), "'config'"),
    "objective-time-not-number": (
        lambda: _with({"objective": {"kind": "measured", "time_ms": "fast"}}),
        "'time_ms'",
    ),
    "format-version-bool": (lambda: _with({"format_version": True}), "'format_version'"),
    "payload-size-str": (
        lambda: _with({"payloads": {"cubin": {"bytes": "12", "sha256": "0" * 64}, "ptx": None}}),
        "payload cubin",
    ),
    "no-payload": (lambda: _with({"payloads": {"cubin": None, "ptx": None}}), "neither"),
    "not-an-object": (lambda: _craft(b"[1, 2, 3]"), "expected an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_metadata_is_a_corrupt_entry(case: str) -> None:
    make, reason = BAD_METADATA[case]
    with pytest.raises(CacheCorruptError, match=reason):
        decode_entry(make(), path="x")


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_metadata_is_a_miss_and_a_quarantine_everywhere(
    cache_dir: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, reason = BAD_METADATA[case]
    other = "gemm.fp16.m128.n64.k64.sm_80"
    put_version(KernelCache(), other, "good")
    path = cache_dir / "v1" / "entries" / f"{KEY}.kernel"
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = make()
    path.write_bytes(blob)

    assert main(["ls"]) == 0  # lists it as bad, never crashes
    out = capsys.readouterr().out
    assert any(r.startswith(KEY) and "BAD:" in r for r in out.splitlines())
    assert any(r.startswith(other) and "BAD" not in r for r in out.splitlines())

    cache = KernelCache(memo=False)
    entry, reasons = cache.lookup(KEY)
    assert entry is None and reason in reasons[0]
    assert not path.exists()  # quarantined
    with pytest.raises(CacheMissError):
        cache.require(KEY)

    path.write_bytes(blob)
    assert main(["show", KEY]) == 2
    assert not path.exists()
    path.write_bytes(blob)
    assert main(["verify"]) == 1
    assert f"BAD {KEY}" in capsys.readouterr().out
    assert cache.get(other) is not None


def test_a_put_refuses_metadata_a_get_could_not_read(cache_dir: Path) -> None:
    cubin, ptx = payload_for(KEY, "v1")
    for bad in ({"created_at": float("nan")}, {"objective": {"time_ms": float("inf")}}):
        with pytest.raises(ValueError, match=r"cannot be stored: .*non-finite"):
            KernelCache().put(KEY, cubin=cubin, ptx=ptx, metadata={**metadata_for("v1"), **bad})
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than"):
        KernelCache().put(KEY, cubin=cubin, ptx=ptx, metadata={**metadata_for("v1"), "d": deep})
    assert KernelCache().list_keys() == []
