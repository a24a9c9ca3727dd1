"""The persistent kernel cache: atomic, checksummed, LRU-bounded, layered, shippable as bundles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cache.entry import CacheEntry, KernelPayload
from cache.inventory import BadEntry, EntryInfo
from cache.layers import SearchPath, search_path
from cache.layout import FORMAT_VERSION, Layout, check_key
from cache.store import KernelCache

if TYPE_CHECKING:
    from cache.bundle import ImportReport, export_bundle, import_bundle

_BUNDLE_NAMES = ("ImportReport", "export_bundle", "import_bundle")


def __getattr__(name: str) -> Any:
    # Bundles need tarfile (and through it bz2, lzma, shutil): loaded on first use only, so a
    # process that only loads kernels does not pay for them at import.
    if name in _BUNDLE_NAMES:
        from cache import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'cache' has no attribute {name!r}")


__all__ = [
    "FORMAT_VERSION",
    "BadEntry",
    "CacheEntry",
    "EntryInfo",
    "ImportReport",
    "KernelCache",
    "KernelPayload",
    "Layout",
    "SearchPath",
    "check_key",
    "export_bundle",
    "import_bundle",
    "search_path",
]
