"""load_specialized: a tuned kernel from any cache layer, memoized in-process for repeated loads."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tessera_core import config
from tessera_core.errors import CacheMissError
from tessera_core.hardware import native_arch
from tessera_core.types import Problem, TileConfig, problem_from_dict

if TYPE_CHECKING:
    from cache.store import KernelCache

MEMO_ENTRIES = 64  # loaded kernels kept by the process-wide memo (LRU)
_ARCH_RE = re.compile(r"\.(sm_\d+a?)(?:\.|$)")

_memo: OrderedDict[tuple[str, tuple[str, ...]], SpecializedKernel] = OrderedDict()
_memo_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class SpecializedKernel:
    """A cached, tuned kernel: what `load_specialized` returns.

    `kernel` is a launchable handle (generator.device) on a CUDA machine whose arch matches,
    else None; `config`, `metadata`, `cubin` and `ptx` are always there.
    """

    kernel_key: str
    config: TileConfig
    metadata: dict[str, Any]
    cubin: bytes | None  # None for a PTX-only entry
    ptx: str | None
    arch: str
    problem: Problem | None
    source: str  # the cache directory the entry came from
    kernel: Any = field(default=None, repr=False)


def arch_of_key(kernel_key: str) -> str:
    """The 'sm_XX' component of a kernel key; ValueError if it has none."""
    match = _ARCH_RE.search(kernel_key)
    if match is None:
        raise ValueError(
            f"kernel_key {kernel_key!r} names no arch; build it with Problem.kernel_key(arch)"
        )
    return match.group(1)


def _default_layers() -> tuple[str, ...]:
    """What `cache_dirs=None` means now: TESSERA_CACHE_DIR (or XDG), then TESSERA_CACHE_PATH."""
    return (str(config.default_cache_dir()), config.CACHE_PATH.get() or "")


def open_cache(cache_dirs: Sequence[str | Path] | None = None) -> KernelCache:
    """The cache `cache_dirs` names (first writable, the rest read-only layers), else the
    default one (TESSERA_CACHE_DIR, then TESSERA_CACHE_PATH's read-only layers)."""
    from cache.store import KernelCache

    if cache_dirs is None:
        return KernelCache()
    dirs = [Path(d) for d in cache_dirs]
    return KernelCache(cache_dir=dirs[0], read_only_dirs=dirs[1:]) if dirs else KernelCache()


def load_specialized(
    kernel_key: str, *, cache_dirs: Sequence[str | Path] | None = None
) -> SpecializedKernel:
    """The specialized kernel of `kernel_key` from the first cache layer holding a usable entry.

    A repeated call is answered from an in-process memo (microseconds). A miss is not
    memoized: a kernel tuned later in another process is found by the next call.

    Raises:
        CacheMissError: no layer holds the key; it names the key and every directory searched.
    """
    # The default layers are named in the key too: TESSERA_CACHE_DIR may change between calls
    # (tests, a notebook), and another directory's entry must not be served from the memo.
    dirs_key = _default_layers() if cache_dirs is None else tuple(str(d) for d in cache_dirs)
    memo_key = (kernel_key, dirs_key)
    hit = _memo.get(memo_key)
    if hit is not None:
        return hit
    loaded = _load(kernel_key, cache_dirs)
    with _memo_lock:
        _memo[memo_key] = loaded
        _memo.move_to_end(memo_key)
        while len(_memo) > MEMO_ENTRIES:
            _memo.popitem(last=False)
    return loaded


def clear_memo() -> None:
    """Forget every memoized kernel (tests; after replacing cache entries out of band)."""
    with _memo_lock:
        _memo.clear()


def _load(kernel_key: str, cache_dirs: Sequence[str | Path] | None) -> SpecializedKernel:
    arch = arch_of_key(kernel_key)
    cache = open_cache(cache_dirs)
    # An entry built from another template source is stale: the key does not hash the source.
    entry = cache.require(kernel_key, arch=arch, template_hash=_template_hash(kernel_key))
    metadata = dict(entry.metadata)
    try:
        config = TileConfig.from_dict(dict(metadata["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheMissError(
            kernel_key,
            [str(p) for p in cache.search_path.all()],
            [f"{entry.layer}: entry metadata has no valid 'config' ({exc})"],
        ) from None
    problem = problem_from_dict(metadata["problem"]) if "problem" in metadata else None
    return SpecializedKernel(
        kernel_key=kernel_key,
        config=config,
        metadata=metadata,
        cubin=entry.cubin,
        ptx=entry.ptx,
        arch=arch,
        problem=problem,
        source=str(entry.layer),
        kernel=_launchable(kernel_key, entry.cubin, entry.ptx, metadata, arch, config, problem),
    )


def _template_hash(kernel_key: str) -> str | None:
    """The current template hash of the key's family ('attention_fwd.…', 'gemm.…')."""
    from generator.render import template_hash
    from templates.registry import get_family

    try:
        family = get_family(kernel_key.split(".", 1)[0])
    except ValueError:
        return None
    return template_hash(family)


def _launchable(
    kernel_key: str,
    cubin: bytes | None,
    ptx: str | None,
    metadata: dict[str, Any],
    arch: str,
    config: TileConfig,
    problem: Problem | None,
) -> Any:
    """A loaded generator.device kernel when this machine has a GPU of `arch`, else None.

    Unverified on hardware here: only the gpu-marked tests/runtime/test_cuda_runtime.py load a
    real entry. A cubin that does not load falls back to the PTX; if neither loads, CudaError
    (load_specialized raises it; the runtime logs it and stays on tier 2).
    """
    from generator.gpu import probe

    gpu = probe()
    # An sm_90 device runs its own sm_90 entries and the sm_90a ones it is natively tuned with.
    runs_here = gpu.arch is not None and arch in (gpu.arch, native_arch(gpu.arch))
    if not gpu.available or not runs_here or problem is None or (cubin is None and ptx is None):
        return None
    from generator import device
    from templates.registry import get_family

    family = get_family(kernel_key.split(".", 1)[0])  # the serving family leads the key
    name = str(metadata.get("kernel_name") or family.kernel_name)
    return device.load(cubin or b"", name, family.smem_bytes(problem, config), ptx=ptx)
