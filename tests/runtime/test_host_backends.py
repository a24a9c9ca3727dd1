"""The real host backends: device='cpu' pre-warms a cache while serving tier 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime import Runtime, RuntimeConfig, load_specialized
from runtime.specialized import clear_memo
from tessera_core.types import AttentionProblem


def test_cpu_device_serves_tier_1_and_fills_the_cache_for_the_target_arch(tmp_path: Path) -> None:
    clear_memo()
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((1, 2, 64, 64)).astype(np.float16) for _ in range(3))
    config = RuntimeConfig(
        device="cpu",
        arch="sm_80",
        tier2_min_calls=1,
        tier3_min_calls=2,
        tuning_trials=2,
        cache_dirs=(tmp_path,),
    )
    with Runtime(config=config) as rt:
        for _ in range(3):
            rt.attention(q, k, v)
        assert rt.wait_for_tuning(120)
        rt.attention(q, k, v)
        history = rt.history()
        stats = rt.stats()
    assert {r.tier for r in history if r.event == "call"} == {1}
    assert stats.tuning.finished == 1, [r.detail for r in history if r.event == "tune"]
    key = AttentionProblem(1, 2, 64, 64, 64).kernel_key("sm_80")
    loaded = load_specialized(key, cache_dirs=[tmp_path])
    assert loaded.cubin and loaded.metadata["arch"] == "sm_80"
    assert loaded.metadata["objective"]["kind"] == "model"  # no GPU of sm_80 here
    assert stats.loaded_kernels == [key]
