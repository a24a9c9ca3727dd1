"""Bad inputs fail with a ValueError naming the argument and expected form; nothing is traced."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from runtime_fakes import FakeBackends, qkv

from runtime import Runtime, RuntimeConfig

F16 = np.float16


def _arr(shape: tuple[int, ...], dtype: Any = F16) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _good() -> dict[str, Any]:
    q, k, v = qkv(seq=16, head_dim=16)
    return {"q": q, "k": k, "v": v}


ATTENTION_CASES = {
    "q float32": (
        {"q": _arr((1, 2, 16, 16), np.float32)},
        r"q has dtype float32; expected float16",
    ),
    "k bf16 vs q fp16": (
        {"k": _arr((1, 2, 16, 16), ml_dtypes.bfloat16)},
        r"q, k, v dtypes differ",
    ),
    "q rank 3": ({"q": _arr((2, 16, 16))}, r"q has rank 3 .*\[batch, heads, seq, head_dim\]"),
    "k head_dim": ({"k": _arr((1, 2, 16, 32))}, r"k has shape .* head_dim=16"),
    "v differs from k": ({"v": _arr((1, 2, 8, 16))}, r"v has shape .* must equal k's shape"),
    "head_dim 44": (
        {k: _arr((1, 2, 16, 44)) for k in "qkv"},
        r"head_dim=44 is not supported; expected a multiple of 8 up to 256",
    ),
    "kv heads not a divisor": (
        {k: _arr((1, 3, 16, 16)) for k in "kv"} | {"q": _arr((1, 4, 16, 16))},
        r"heads_kv dividing heads=4 \(GQA/MQA\)",
    ),
    "window one side": ({"window_size": (4,)}, r"window_size=\(4,\): expected"),
    "window below -1": ({"window_size": (-2, 0)}, r"window_left=-2: must be an integer >= 0"),
    "window text": ({"window_size": ("8", 0)}, r"window_left='8'"),
    "softcap negative": ({"softcap": -1.0}, r"softcap=-1.0: expected 0.0 \(off\)"),
    "softcap nan": ({"softcap": float("nan")}, r"softcap=nan"),
    "alibi wrong shape": (
        {"alibi_slopes": np.ones(3, np.float32)},
        r"alibi_slopes has shape \(3,\) and dtype float32; expected float32 \[heads=2\]",
    ),
    "alibi float16": (
        {"alibi_slopes": np.ones(2, np.float16)},
        r"alibi_slopes has shape \(2,\) and dtype float16",
    ),
    "alibi a list": ({"alibi_slopes": [0.1, 0.2]}, r"alibi_slopes is a list"),
    "layout unknown": ({"layout": "sbhd"}, r"layout='sbhd': expected one of 'bhsd', 'bshd'"),
    "head_dim 512": (
        {k: _arr((1, 2, 16, 512)) for k in "qkv"},
        r"head_dim=512 is not supported",
    ),
    "q not contiguous": (
        {"q": _arr((1, 2, 16, 16)).transpose(0, 1, 3, 2)},
        r"q is not contiguous",
    ),
    "q a list": ({"q": [[1.0]]}, r"q is a list; expected a NumPy array"),
    "empty seq": ({k: _arr((1, 2, 0, 16)) for k in "qkv"}, r"q has shape .* must be > 0"),
    "scale nan": ({"scale": float("nan")}, r"scale=nan"),
    "scale zero": ({"scale": 0.0}, r"scale=0.0: expected None"),
    "scale negative": ({"scale": -0.5}, r"scale=-0.5"),
    "scale inf": ({"scale": float("inf")}, r"scale=inf"),
    "scale text": ({"scale": "0.1"}, r"scale='0.1'"),
    "scale bool": ({"scale": True}, r"scale=True"),
    "causal text": ({"causal": "yes"}, r"causal='yes': expected a bool"),
    "return_lse text": ({"return_lse": "yes"}, r"return_lse='yes': expected a bool"),
    "config a list": (
        {"config": [64, 64]},
        r"config=\[64, 64\]: expected None, a TileConfig or a dict of block_m",
    ),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES), ids=list(ATTENTION_CASES))
def test_bad_attention_input_is_a_value_error_naming_the_argument(case: str) -> None:
    override, message = ATTENTION_CASES[case]
    backends = FakeBackends()
    rt = Runtime(config=RuntimeConfig(tier2_min_calls=0), backends=backends)
    args = {**_good(), **override}
    with pytest.raises(ValueError, match=message):
        rt.attention(**args)
    assert rt.history() == []
    stats = rt.stats()
    assert stats.total_calls == 0 and stats.failed_calls == 0 and stats.signatures == 0
    assert backends.generic_builds == {}


GEMM_CASES = {
    "a rank 3": ((_arr((2, 4, 16)), _arr((16, 8))), r"a has rank 3 .*\[M, K\]"),
    "inner dims": ((_arr((4, 16)), _arr((8, 8))), r"b must be \[K=16, N\]"),
    "dtypes": (
        (_arr((4, 16)), _arr((16, 8), ml_dtypes.bfloat16)),
        r"a is fp16 and b is bf16",
    ),
    "b float64": ((_arr((4, 16)), _arr((16, 8), np.float64)), r"b has dtype float64"),
}


@pytest.mark.parametrize("case", list(GEMM_CASES), ids=list(GEMM_CASES))
def test_bad_gemm_input_is_a_value_error_naming_the_argument(case: str) -> None:
    (a, b), message = GEMM_CASES[case]
    rt = Runtime(config=RuntimeConfig(), backends=FakeBackends())
    with pytest.raises(ValueError, match=message):
        rt.gemm(a, b)
    assert rt.history() == []


def test_valid_bf16_and_explicit_scale_are_accepted_into_the_signature() -> None:
    rt = Runtime(config=RuntimeConfig(), backends=FakeBackends())
    q, k, v = qkv(seq=16, head_dim=32, dtype=ml_dtypes.bfloat16)
    rt.attention(q, k, v, causal=True, scale=np.float32(0.25))
    (record,) = rt.history()
    assert (record.dtype, record.shape, record.causal, record.scale) == (
        "bf16",
        (1, 2, 16, 16, 32),
        True,
        0.25,
    )
