"""Resources from ptxas' verbose report, and each arch limit the limits helper enforces."""

from __future__ import annotations

import pytest

from generator.resources import (
    Resources,
    block_registers,
    check_limits,
    limit_violation,
    parse_ptxas_log,
)
from templates.family import LaunchGeometry
from tessera_core.errors import OutOfResourcesError

# Two entries as ptxas -v reports them through NVRTC 13.5 (the second one spills).
LOG = """ptxas info    : 4 bytes gmem
ptxas info    : Compiling entry function 'small' for 'sm_90'
ptxas info    : Function properties for small
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 18 registers, used 1 barriers, 2048 bytes smem
ptxas info    : Compile time = 3.928 ms
ptxas info    : Compiling entry function 'big' for 'sm_90'
ptxas info    : Function properties for big
ptxas         .     40 bytes stack frame, 24 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 372 bytes cmem[0]
ptxas info    : Compile time = 30.1 ms
"""


def _resources(**changes: int) -> Resources:
    base = {
        "registers": 64,
        "static_smem_bytes": 0,
        "spill_store_bytes": 0,
        "spill_load_bytes": 0,
        "stack_bytes": 0,
    }
    return Resources(**{**base, **changes})


def _geometry(threads: int = 128, smem_bytes: int = 0) -> LaunchGeometry:
    return LaunchGeometry(grid=(8, 1, 1), block=(threads, 1, 1), smem_bytes=smem_bytes)


def test_parse_named_entry() -> None:
    assert parse_ptxas_log(LOG, "small") == Resources(18, 2048, 0, 0, 0)
    assert parse_ptxas_log(LOG, "big") == Resources(255, 0, 24, 16, 40)


def test_parse_single_entry_without_name() -> None:
    single = LOG.split("ptxas info    : Compiling entry function 'big'")[0]
    assert parse_ptxas_log(single).registers == 18


def test_parse_missing_entry_names_the_entries() -> None:
    with pytest.raises(ValueError, match=r"'other'.*big.*small"):
        parse_ptxas_log(LOG, "other")
    with pytest.raises(ValueError, match="-v"):
        parse_ptxas_log("", None)


def test_block_registers_rounds_to_the_allocation_unit() -> None:
    assert block_registers(64, 128) == 64 * 128
    assert block_registers(33, 32) == 40 * 32  # 33 regs/thread round up to 40 a warp
    assert block_registers(255, 256) == 256 * 256


def test_fitting_kernel_has_no_violation() -> None:
    assert limit_violation(_resources(), _geometry(smem_bytes=96 * 1024), "sm_90") is None
    check_limits(_resources(), _geometry(), "sm_80")


@pytest.mark.parametrize(
    ("resources", "geometry", "arch", "resource", "need", "limit"),
    [
        (_resources(), _geometry(threads=2048), "sm_90", "threads_per_block", 2048, 1024),
        (_resources(registers=256), _geometry(), "sm_90", "registers_per_thread", 256, 255),
        (_resources(registers=128), _geometry(threads=1024), "sm_80", "registers_per_block",
         128 * 1024, 65536),
        (_resources(static_smem_bytes=49 * 1024), _geometry(), "sm_90", "static_smem_bytes",
         49 * 1024, 48 * 1024),
        (_resources(), _geometry(smem_bytes=100 * 1024), "sm_86", "smem_bytes_per_block",
         100 * 1024, 99 * 1024),
        (_resources(static_smem_bytes=1024), _geometry(smem_bytes=227 * 1024), "sm_90",
         "smem_bytes_per_block", 228 * 1024, 227 * 1024),
        (_resources(spill_store_bytes=8, spill_load_bytes=4), _geometry(), "sm_90",
         "spill_bytes", 12, 0),
    ],
)  # fmt: skip
def test_each_limit_is_enforced(
    resources: Resources,
    geometry: LaunchGeometry,
    arch: str,
    resource: str,
    need: int,
    limit: int,
) -> None:
    error = limit_violation(resources, geometry, arch)
    assert isinstance(error, OutOfResourcesError)
    assert (error.resource, error.need, error.limit, error.arch) == (resource, need, limit, arch)
    with pytest.raises(OutOfResourcesError, match=resource):
        check_limits(resources, geometry, arch)


def test_same_smem_fits_one_arch_but_not_another() -> None:
    geometry = _geometry(smem_bytes=160 * 1024)
    assert limit_violation(_resources(), geometry, "sm_80") is None
    assert limit_violation(_resources(), geometry, "sm_89") is not None


def test_spills_may_be_allowed() -> None:
    spilling = _resources(spill_store_bytes=8, spill_load_bytes=8)
    assert limit_violation(spilling, _geometry(), "sm_90", allow_spills=True) is None


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(ValueError, match="sm_75"):
        limit_violation(_resources(), _geometry(), "sm_75")
