"""Whether a loaded entry may serve a request: template, compiler and arch compatibility."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from cache.entry import CacheEntry
from cache.layout import FORMAT_VERSION

_ARCH_RE = re.compile(r"(?:sm|compute)_(\d+)(\d)([af]?)")


def parse_arch(arch: str) -> tuple[int, int, str]:
    """'sm_90a' -> (9, 0, 'a'); ValueError for anything else."""
    match = _ARCH_RE.fullmatch(arch)
    if match is None:
        raise ValueError(f"arch={arch!r}: expected sm_XY (e.g. sm_80, sm_90a)")
    return int(match.group(1)), int(match.group(2)), match.group(3)


def cubin_runs_on(built_for: str, device: str) -> bool:
    """A cubin runs on the same major compute capability with an equal or higher minor.

    Arch-specific targets (sm_90a) run only on exactly that compute capability.
    """
    major, minor, suffix = parse_arch(built_for)
    dev_major, dev_minor, _ = parse_arch(device)
    if suffix:
        return (major, minor) == (dev_major, dev_minor)
    return major == dev_major and minor <= dev_minor


def ptx_runs_on(built_for: str, device: str) -> bool:
    """PTX JIT-compiles forward: to any equal or newer compute capability (not for sm_XYa)."""
    major, minor, suffix = parse_arch(built_for)
    dev_major, dev_minor, _ = parse_arch(device)
    if suffix:
        return (major, minor) == (dev_major, dev_minor)
    return (major, minor) <= (dev_major, dev_minor)


def check(
    metadata: dict[str, Any],
    *,
    has_cubin: bool,
    has_ptx: bool,
    arch: str | None,
    template_hash: str | None,
    nvrtc_version: str | None,
) -> tuple[str | None, bool]:
    """(reason it cannot serve, or None; whether the PTX must be used instead of the cubin).

    A None requirement is not checked. `nvrtc_version` is strict equality when given.
    """
    if metadata.get("format_version") != FORMAT_VERSION:
        return f"cache format {metadata.get('format_version')!r} != {FORMAT_VERSION}", False
    if template_hash is not None and metadata.get("template_hash") != template_hash:
        return (
            f"built from template {metadata.get('template_hash')!r}, current is {template_hash!r}",
            False,
        )
    if nvrtc_version is not None and metadata.get("nvrtc_version") != nvrtc_version:
        return (
            f"built with NVRTC {metadata.get('nvrtc_version')!r}, requested {nvrtc_version!r}",
            False,
        )
    if arch is None:
        return None, not has_cubin
    built_for = str(metadata.get("arch", ""))
    try:
        if has_cubin and cubin_runs_on(built_for, arch):
            return None, False
        if has_ptx and ptx_runs_on(built_for, arch):
            return None, True
    except ValueError as exc:
        return f"arch check failed: {exc}", False
    return f"built for {built_for}, which a {arch} device can run neither as cubin nor PTX", False


def serve(
    entry: CacheEntry,
    *,
    arch: str | None,
    template_hash: str | None,
    nvrtc_version: str | None,
) -> tuple[CacheEntry | None, str | None]:
    """(`entry` as it serves the request, with `use_ptx` set; or None and the reason it cannot)."""
    reason, use_ptx = check(
        entry.metadata,
        has_cubin=entry.cubin is not None,
        has_ptx=entry.ptx is not None,
        arch=arch,
        template_hash=template_hash,
        nvrtc_version=nvrtc_version,
    )
    if reason is not None:
        return None, reason
    return (entry if entry.use_ptx == use_ptx else replace(entry, use_ptx=use_ptx)), None
