"""The entry file format: round trip, every integrity check, and arch compatibility rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cache.entry import decode_entry, encode_entry
from cache.layout import check_key
from cache.validity import check, cubin_runs_on, ptx_runs_on
from tessera_core.errors import CacheCorruptError, InvalidCacheKeyError

KEY = "gemm.fp16.m64.n64.k64.sm_80"


def _blob(
    cubin: bytes | None = b"\x7fELF" + bytes(range(256)) * 3, ptx: str | None = "// ptx\n"
) -> tuple[bytes, dict[str, Any]]:
    head, c, p, stored = encode_entry(
        KEY, cubin=cubin, ptx=ptx, metadata={"arch": "sm_80", "template_hash": "t"}
    )
    return head + c + p, stored


def test_round_trip_keeps_payloads_and_records_checksums() -> None:
    blob, stored = _blob()
    metadata, cubin, ptx = decode_entry(blob, path="x")
    assert cubin == b"\x7fELF" + bytes(range(256)) * 3
    assert ptx == "// ptx\n"
    assert metadata == json.loads(json.dumps(stored))
    assert len(metadata["payloads"]["cubin"]["sha256"]) == 64
    assert metadata["kernel_key"] == KEY and metadata["format_version"] == 1


def test_absent_payloads_round_trip_as_none() -> None:
    blob, _ = _blob(cubin=None)
    assert decode_entry(blob, path="x")[1] is None
    blob, _ = _blob(ptx=None)
    assert decode_entry(blob, path="x")[2] is None


def test_entry_needs_a_payload_and_an_arch() -> None:
    with pytest.raises(ValueError, match="cubin, a PTX"):
        encode_entry(KEY, cubin=None, ptx=None, metadata={"arch": "sm_80"})
    with pytest.raises(ValueError, match="arch"):
        encode_entry(KEY, cubin=b"x", ptx=None, metadata={})


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: _flip(b, len(b) - 3), id="ptx-byte"),
        pytest.param(lambda b: _flip(b, len(b) - 200), id="cubin-byte"),
        pytest.param(lambda b: _flip(b, b.index(b"template_hash") + 2), id="metadata-byte"),
        pytest.param(lambda b: _flip(b, 3), id="header-byte"),
        pytest.param(lambda b: b[:-1], id="truncated-by-one"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b[:40], id="truncated-in-header"),
        pytest.param(lambda b: b + b"\0", id="extra-byte"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"{not an entry}\n" * 4, id="garbage"),
    ],
)
def test_any_damage_is_detected(mutate) -> None:  # type: ignore[no-untyped-def]
    blob, _ = _blob()
    with pytest.raises(CacheCorruptError):
        decode_entry(mutate(blob), path="x")


def test_unparsable_metadata_with_matching_checksum_is_detected() -> None:
    import hashlib

    bad_meta = b'{"payloads": '
    blob = b"TESSERA-KERNEL-ENTRY v1 %d %s\n" % (
        len(bad_meta),
        hashlib.sha256(bad_meta).hexdigest().encode(),
    )
    with pytest.raises(CacheCorruptError, match="unparsable"):
        decode_entry(blob + bad_meta, path="x")


@pytest.mark.parametrize(
    ("built", "device", "cubin", "ptx"),
    [
        ("sm_80", "sm_80", True, True),
        ("sm_80", "sm_86", True, True),  # same major, higher minor
        ("sm_86", "sm_80", False, False),  # lower minor
        ("sm_80", "sm_90", False, True),  # PTX JIT forward only
        ("sm_90", "sm_80", False, False),
        ("sm_90a", "sm_90", True, True),
        ("sm_90a", "sm_100", False, False),
        ("sm_100", "sm_120", False, True),
    ],
)
def test_arch_compatibility(built: str, device: str, cubin: bool, ptx: bool) -> None:
    assert cubin_runs_on(built, device) is cubin
    assert ptx_runs_on(built, device) is ptx


def test_check_flags_ptx_when_only_the_ptx_fits() -> None:
    meta = {"format_version": 1, "arch": "sm_80", "template_hash": "t", "nvrtc_version": "12.8"}
    common = {"has_cubin": True, "has_ptx": True, "template_hash": "t", "nvrtc_version": "12.8"}
    assert check(meta, arch="sm_86", **common) == (None, False)  # type: ignore[arg-type]
    assert check(meta, arch="sm_90", **common) == (None, True)  # type: ignore[arg-type]
    reason, _ = check(meta, arch="sm_90", **{**common, "has_ptx": False})  # type: ignore[arg-type]
    assert reason is not None and "sm_90" in reason
    reason, _ = check(meta, arch=None, **{**common, "template_hash": "u"})  # type: ignore[arg-type]
    assert reason is not None and "template" in reason
    reason, _ = check(meta, arch=None, **{**common, "nvrtc_version": "13.0"})  # type: ignore[arg-type]
    assert reason is not None and "NVRTC" in reason
    reason, _ = check({**meta, "format_version": 0}, arch=None, **common)  # type: ignore[arg-type]
    assert reason is not None and "format" in reason


@pytest.mark.parametrize("key", ["", "../x", "/abs", "a/b", ".hidden", "-x", "a b", "k" * 201])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidCacheKeyError):
        check_key(key)


def test_problem_kernel_keys_are_valid_cache_keys() -> None:
    from tessera_core.types import AttentionProblem, GemmProblem

    check_key(AttentionProblem(2, 8, 1024, 1024, 64, causal=True).kernel_key("sm_90"))
    check_key(GemmProblem(4096, 4096, 4096, dtype="bf16").generic_key("sm_80"))
