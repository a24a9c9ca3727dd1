"""The cost model's predicted forward-attention TFLOP/s beside FlashAttention-2's published figures.

No GPU needed: `python -m pytest benchmarks/bench_model.py --benchmark-only -s` tunes each
(arch, head_dim, causal) class at seq 2048 with the model objective (real NVRTC compiles,
ptxas resources and SASS main loops), predicts seq 2048 and 8192 with the winner, and also
predicts FlashAttention-2's own tiles (Q from shared memory, 255 registers, analytical mix).
`extra_info` carries every number and the table prints at the end; nothing is asserted about
the values (the issue's 0.9-1.1x band is a reported target). Tuning costs minutes on 2 cores.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import published
from tessera_core.types import AttentionProblem

ARCHS = ("sm_80", "sm_90")
TRIALS = 16
_rows: dict[tuple[str, AttentionProblem], dict[str, float]] = {}


def _predict(arch: str, head_dim: int, causal: bool) -> dict[str, Any]:
    tune_shape = AttentionProblem(8, 16, 2048, 2048, head_dim, causal=causal)
    config, _ = published.model_tuned(tune_shape, arch, trials=TRIALS)
    out: dict[str, Any] = {"config": str(config)}
    for seq in published.SEQS:
        problem = AttentionProblem(8, 16, seq, seq, head_dim, causal=causal)
        values = {
            "tuned": published.compiled_model_tflops(problem, config, arch),
            "fa2_tiles": published.model_tflops(problem, published.fa2_tile_config(head_dim), arch),
        }
        _rows[(arch, problem)] = values
        out[f"seq{seq}"] = values
        fa2 = published.PUBLISHED.get((arch, head_dim, causal, seq), {}).get("fa2")
        if fa2:
            out[f"seq{seq}"]["fa2_published"] = list(fa2)
            out[f"seq{seq}"]["tuned_over_fa2"] = published.band(values["tuned"], fa2)
    return out


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("head_dim", published.HEAD_DIMS)
@pytest.mark.parametrize("arch", ARCHS)
def test_model_prediction_vs_published(benchmark: Any, arch: str, head_dim: int, causal: bool):
    result = benchmark.pedantic(_predict, args=(arch, head_dim, causal), rounds=1, iterations=1)
    benchmark.extra_info.update(arch=arch, head_dim=head_dim, causal=causal, **result)


def teardown_module() -> None:
    if _rows:
        print("\n" + "\n".join(published.table_rows(dict(sorted(_rows.items(), key=str)))))
