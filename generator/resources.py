"""A compiled kernel's resource usage, read from ptxas' verbose report, and the arch's limits."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from templates.family import LaunchGeometry
from tessera_core.errors import OutOfResourcesError
from tessera_core.hardware import REG_ALLOC_UNIT, WARP_SIZE, arch_spec, ceil_div

_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


@dataclass(frozen=True)
class Resources:
    """Per-thread registers and per-block static shared memory, spills and stack of one kernel."""

    registers: int
    static_smem_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    stack_bytes: int

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resources:
        return cls(**{name: int(data[name]) for name in cls.__dataclass_fields__})


def parse_ptxas_log(log: str, kernel_name: str | None = None) -> Resources:
    """Resources of `kernel_name` (or the only entry function) from `ptxas -v` output.

    Raises ValueError when the log holds no report for that kernel (compiled without -v?).
    """
    sections: dict[str, str] = {}
    matches = list(_ENTRY.finditer(log))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(log)
        sections[match.group(1)] = log[match.end() : end]
    if kernel_name is None and len(sections) == 1:
        kernel_name = next(iter(sections))
    if kernel_name not in sections:
        raise ValueError(
            f"no ptxas report for entry {kernel_name!r} (entries: {sorted(sections)}); "
            'compile with ptxas option -v and an extern "C" __global__ entry point'
        )
    section = sections[kernel_name]
    frame = _FRAME.search(section)
    used = _USED.search(section)
    if frame is None or used is None:
        raise ValueError(
            f"ptxas report for {kernel_name!r} lacks registers or stack frame:\n{section}"
        )
    smem = _SMEM.search(section[used.start() :])
    return Resources(
        registers=int(used.group(1)),
        static_smem_bytes=int(smem.group(1)) if smem else 0,
        spill_store_bytes=int(frame.group(2)),
        spill_load_bytes=int(frame.group(3)),
        stack_bytes=int(frame.group(1)),
    )


def block_registers(registers: int, threads: int) -> int:
    """Registers a block of `threads` threads holds on its SM, allocation granularity included.

    A block of W warps holds W * roundup(registers * 32, 256) registers of the register file.
    """
    warps = ceil_div(threads, WARP_SIZE)
    per_warp = ceil_div(registers * WARP_SIZE, REG_ALLOC_UNIT)
    return warps * per_warp * REG_ALLOC_UNIT


def limit_violation(
    resources: Resources, geometry: LaunchGeometry, arch: str, *, allow_spills: bool = False
) -> OutOfResourcesError | None:
    """The first limit of `arch` this kernel and launch break, or None when it fits.

    Checked: threads per block, registers per thread and per block (one block must fit the
    SM's register file), static shared memory (48 KiB), static + dynamic shared memory
    against the opt-in per-block limit, and spills (a spilling candidate counts as out of
    registers unless `allow_spills`).
    """
    spec = arch_spec(arch)
    threads = math.prod(geometry.block)
    checks = (
        ("threads_per_block", threads, spec.max_threads_per_block),
        ("registers_per_thread", resources.registers, spec.max_regs_per_thread),
        ("registers_per_block", block_registers(resources.registers, threads), spec.regs_per_sm),
        ("static_smem_bytes", resources.static_smem_bytes, spec.max_static_smem_bytes),
        (
            "smem_bytes_per_block",
            resources.static_smem_bytes + geometry.smem_bytes,
            spec.max_smem_per_block_bytes,
        ),
        ("spill_bytes", 0 if allow_spills else resources.spill_bytes, 0),
    )
    for resource, need, limit in checks:
        if need > limit:
            return OutOfResourcesError(resource=resource, need=need, limit=limit, arch=arch)
    return None


def check_limits(
    resources: Resources, geometry: LaunchGeometry, arch: str, *, allow_spills: bool = False
) -> None:
    """Raise the OutOfResourcesError of `limit_violation`, if any."""
    error = limit_violation(resources, geometry, arch, allow_spills=allow_spills)
    if error is not None:
        raise error
