"""The tune job on sm_90a searches gemm_sm90's space and stores its winner under a key naming it."""

from __future__ import annotations

from pathlib import Path

from autotune.job import TuneRequest, run
from runtime.specialized import clear_memo, load_specialized
from templates.registry import get_family
from tessera_core.types import GemmProblem, TileConfig


def test_sm90a_gemm_is_tuned_in_the_hopper_family_and_cached_under_its_key(
    tmp_path: Path,
) -> None:
    problem = GemmProblem(256, 256, 256, dtype="bf16")
    result = run(
        TuneRequest(
            problem=problem, arch="sm_90a", trials=2, jobs=1, cache_dir=tmp_path, progress=False
        )
    )
    assert result.kernel_key == "gemm_sm90.bf16.m256.n256.k256.sm_90a"
    assert result.objective_kind == "model"  # no GPU here
    winner = TileConfig.from_dict(result.config)
    assert get_family("gemm_sm90").space.is_valid(winner, problem, "sm_90a")
    clear_memo()
    loaded = load_specialized(result.kernel_key, cache_dirs=[tmp_path])
    assert loaded.metadata["kernel_name"] == "tessera_gemm_sm90"
    assert loaded.metadata["arch"] == "sm_90a" and loaded.cubin
