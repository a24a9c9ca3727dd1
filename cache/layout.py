"""The on-disk layout of one kernel cache directory, with the format version in its path.

    <root>/v1/entries/<kernel_key>.kernel   one file per key: header, metadata JSON, cubin, PTX
    <root>/v1/tmp/                          entries being written (same filesystem, then renamed),
                                            each flocked by its writer; bundle imports stage here
    <root>/v1/locks/index.lock              guards publish (rename) and eviction
    <root>/v1/locks/keys/<kernel_key>.lock  single-flight build lock of one key (its own
                                            directory: a key named `index` is not the index lock)
    <root>/v1/quarantine/                   entries that failed an integrity check

The directory listing of entries/ is the index: there is no separate index file to corrupt.
An entry file's mtime is its last-use time (see `KernelCache`, `touch_interval_s`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tessera_core.errors import InvalidCacheKeyError

FORMAT_VERSION = 1
ENTRY_SUFFIX = ".kernel"
MAX_KEY_CHARS = 200
_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def is_key(name: str) -> bool:
    """Whether `name` is a valid kernel key (a file in entries/ with another name is foreign)."""
    return len(name) <= MAX_KEY_CHARS and _KEY_RE.fullmatch(name) is not None


def key_of_entry_file(file_name: str) -> str | None:
    """The key an entries/ file name stands for: `<valid key>.kernel`, else None (foreign)."""
    if not file_name.endswith(ENTRY_SUFFIX):
        return None
    key = file_name[: -len(ENTRY_SUFFIX)]
    return key if is_key(key) else None


def check_key(kernel_key: str) -> str:
    """Return `kernel_key` if it can name an entry file, else raise InvalidCacheKeyError."""
    if not isinstance(kernel_key, str) or not is_key(kernel_key):
        raise InvalidCacheKeyError(
            f"kernel_key {kernel_key!r}: must be 1-{MAX_KEY_CHARS} characters of [A-Za-z0-9._-] "
            "not starting with '.' or '-'; build it with Problem.kernel_key(arch)"
        )
    return kernel_key


@dataclass(frozen=True, kw_only=True)
class Layout:
    """The paths of one cache root (a writable cache or a read-only layer)."""

    root: Path

    @property
    def version_dir(self) -> Path:
        return self.root / f"v{FORMAT_VERSION}"

    @property
    def entries_dir(self) -> Path:
        return self.version_dir / "entries"

    @property
    def tmp_dir(self) -> Path:
        return self.version_dir / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.version_dir / "locks"

    @property
    def quarantine_dir(self) -> Path:
        return self.version_dir / "quarantine"

    @property
    def index_lock_path(self) -> Path:
        return self.locks_dir / "index.lock"

    def entry_path(self, kernel_key: str) -> Path:
        return self.entries_dir / f"{check_key(kernel_key)}{ENTRY_SUFFIX}"

    def key_lock_path(self, kernel_key: str) -> Path:
        return self.locks_dir / "keys" / f"{check_key(kernel_key)}.lock"

    def make_dirs(self) -> None:
        for path in (self.entries_dir, self.tmp_dir, self.locks_dir, self.quarantine_dir):
            path.mkdir(parents=True, exist_ok=True)

    def entry_keys(self) -> list[str]:
        """Keys of the entries present now, sorted; [] if the directory does not exist.

        Files whose name is not `<valid key>.kernel` (dropped there by hand or another tool)
        are ignored: they are no entry, and must not break listing, verify or eviction.
        """
        try:
            keys = [key_of_entry_file(e.name) for e in self.entries_dir.iterdir()]
        except FileNotFoundError:
            return []
        return sorted(key for key in keys if key is not None)
