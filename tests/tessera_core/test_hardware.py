from __future__ import annotations

import pytest

from tessera_core.hardware import ARCHS, arch_spec


def test_arch_table_matches_reference() -> None:
    assert arch_spec("sm_90").sm_count == 132
    assert arch_spec("sm_80").max_smem_per_block_bytes == 163 * 1024
    assert arch_spec("sm_86").max_warps_per_sm == 48
    assert arch_spec("sm_89").compute_capability == (8, 9)
    assert set(ARCHS) == {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"}


def test_sm_90a_is_sm_90_with_its_arch_specific_features() -> None:
    plain, specific = arch_spec("sm_90"), arch_spec("sm_90a")
    assert specific.compute_capability == (9, 0)
    assert specific.arch_specific and not plain.arch_specific
    assert specific.sm_count == plain.sm_count
    assert specific.max_smem_per_block_bytes == plain.max_smem_per_block_bytes


def test_unknown_arch_names_choices() -> None:
    with pytest.raises(ValueError, match="sm_80, sm_86, sm_89, sm_90, sm_90a"):
        arch_spec("sm_70")
