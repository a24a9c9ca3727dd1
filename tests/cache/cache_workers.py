"""Helpers the cache tests run in other processes (importable by spawned workers)."""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from cache import KernelCache, KernelPayload

ROOT = Path(__file__).resolve().parents[2]
MEMORY_MARGIN_BYTES = 256 * 1024**2


def run_limited(
    code: str, *, margin_bytes: int = MEMORY_MARGIN_BYTES
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter whose address space (RLIMIT_AS) may grow only
    `margin_bytes` past what it uses once the cache is imported: an allocation the size of
    a hostile header's claim fails there, where it would succeed (slowly) here."""
    preamble = f"""
        import resource
        import cache, cache.bundle, cache.__main__
        with open("/proc/self/status") as status:
            vm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize"))
        limit = vm_kib * 1024 + {margin_bytes}
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        """
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(preamble) + textwrap.dedent(code)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def payload_for(kernel_key: str, version: str) -> tuple[bytes, str]:
    """Cubin and PTX derived from (key, version): a reader can tell a mixed entry apart."""
    seed = hashlib.sha256(f"{kernel_key}|{version}".encode()).digest()
    cubin = b"\x7fELF" + seed * (32 + seed[0] % 64)
    ptx = f"// {kernel_key} {version} {seed.hex()}\n" * (4 + seed[1] % 8)
    return cubin, ptx


def metadata_for(version: str, *, arch: str = "sm_80") -> dict[str, Any]:
    return {
        "arch": arch,
        "version": version,
        "template_hash": "tmpl-1",
        "nvrtc_version": "12.8",
        "objective": {"kind": "time_ms", "value": 0.5},
        "config": {"block_m": 64, "block_n": 64, "block_k": 32, "num_warps": 4, "num_stages": 2},
    }


def put_version(cache: KernelCache, kernel_key: str, version: str) -> None:
    cubin, ptx = payload_for(kernel_key, version)
    cache.put(kernel_key, cubin=cubin, ptx=ptx, metadata=metadata_for(version))


def consistent(kernel_key: str, entry: Any) -> bool:
    """True if the entry's payloads are exactly those of the version its metadata names."""
    cubin, ptx = payload_for(kernel_key, entry.metadata["version"])
    return entry.cubin == cubin and entry.ptx == ptx and entry.kernel_key == kernel_key


def stress_worker(task: tuple[str, int, int, list[str], int]) -> dict[str, Any]:
    """Mixed get/put/prune ops over shared keys; returns what it did and any inconsistency."""
    cache_dir, worker_id, n_ops, keys, prune_bytes = task
    rng = random.Random(1000 + worker_id)
    cache = KernelCache(cache_dir=cache_dir, read_only_dirs=(), memo=False, touch_interval_s=0.0)
    puts: list[tuple[str, str, float]] = []
    prune_ends: list[float] = []  # a prune evicts between its start and its end
    errors: list[str] = []
    counts = {"get": 0, "hit": 0, "put": 0, "prune": 0}
    for seq in range(n_ops):
        key = rng.choice(keys)
        roll = rng.random()
        if roll < 0.5:
            counts["get"] += 1
            entry = cache.get(key, arch="sm_80")
            if entry is not None:
                counts["hit"] += 1
                if not consistent(key, entry):
                    errors.append(f"{key}: payloads do not match version {entry.metadata}")
        elif roll < 0.92:
            counts["put"] += 1
            version = f"w{worker_id}-{seq}"
            put_version(cache, key, version)
            puts.append((key, version, time.time()))
        else:
            counts["prune"] += 1
            cache.prune(max_bytes=prune_bytes)
            prune_ends.append(time.time())
    return {"puts": puts, "prune_ends": prune_ends, "errors": errors, "counts": counts}


def build_counting(build_dir: str, kernel_key: str, hold_s: float) -> tuple[KernelPayload, str]:
    """Record one build as a file in build_dir, take hold_s, return the payload."""
    version = f"build-{os.getpid()}-{secrets.token_hex(3)}"
    Path(build_dir, version).write_text("built")
    time.sleep(hold_s)
    cubin, ptx = payload_for(kernel_key, version)
    return KernelPayload(cubin=cubin, ptx=ptx, metadata=metadata_for(version)), version


def single_flight_worker(task: tuple[str, str, str, float, float]) -> str:
    """get_or_build one key; return the version it got (built here or by another process)."""
    cache_dir, build_dir, kernel_key, hold_s, wait_timeout_s = task
    cache = KernelCache(cache_dir=cache_dir, read_only_dirs=(), memo=False)
    entry = cache.get_or_build(
        kernel_key,
        lambda: build_counting(build_dir, kernel_key, hold_s)[0],
        wait_timeout_s=wait_timeout_s,
        arch="sm_80",
    )
    assert consistent(kernel_key, entry)
    return str(entry.metadata["version"])
