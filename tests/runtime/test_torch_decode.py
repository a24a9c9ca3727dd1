"""runtime.torch_decode: the kvcache op against float64 on CPU tensors (bf16 and fp16, at tier 1
and on the emulator's tier 2), the in-place append, torch.compile and one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import runtime.torch_decode as td  # noqa: E402  (after the importorskip)
from runtime import Runtime, RuntimeConfig  # noqa: E402
from templates.attention_decode.reference import attention_decode_reference  # noqa: E402


@pytest.fixture
def rt() -> Iterator[Runtime]:
    config = RuntimeConfig(device="emulator", arch="sm_80", tier2_min_calls=1, tuning_workers=0)
    with Runtime(config=config) as runtime:
        yield runtime


def _inputs(dtype: Any, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Any:
        return torch.randn(*shape, generator=gen).to(dtype)

    return {
        "q": rand(2, 1, 4, 32),
        "k_cache": rand(10, 16, 2, 32),
        "v_cache": rand(10, 16, 2, 32),
        "k": rand(2, 1, 2, 32),
        "v": rand(2, 1, 2, 32),
        "cache_seqlens": torch.tensor([30, 7], dtype=torch.int32),
        "block_table": torch.randperm(10, generator=gen).to(torch.int32).reshape(2, 5),
    }


def _want(inputs: dict[str, Any], alibi_slopes: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Float64 O and the k cache after the append, from float64 copies."""
    host = {n: t.to(torch.float64).numpy() if t.is_floating_point() else t.numpy()
            for n, t in inputs.items()}  # fmt: skip
    o, _ = attention_decode_reference(
        host["q"], host["k_cache"], host["v_cache"], k=host["k"], v=host["v"],
        cache_seqlens=host["cache_seqlens"], block_table=host["block_table"], causal=True,
        alibi_slopes=None if alibi_slopes is None else alibi_slopes.numpy(),
    )  # fmt: skip
    return o, host["k_cache"]


@pytest.mark.parametrize("dtype,tolerance", [("float16", 4e-3), ("bfloat16", 3e-2)])
def test_matches_float64_and_appends_in_place_at_tiers_1_and_2(
    rt: Runtime, dtype: str, tolerance: float
) -> None:
    for seed in (1, 2):  # the first call runs tier 1, the second the emulated kernel
        inputs = _inputs(getattr(torch, dtype), seed)
        want_o, want_cache = _want(inputs)
        o = td.attention_with_kvcache(**inputs, causal=True, runtime=rt)
        got = o.to(torch.float64).numpy()
        assert np.linalg.norm(got - want_o) / np.linalg.norm(want_o) <= tolerance
        assert np.array_equal(inputs["k_cache"].to(torch.float64).numpy(), want_cache)
    assert [r.tier for r in rt.history() if r.event == "call"] == [1, 2]


def test_alibi_slopes_at_tiers_1_and_2(rt: Runtime) -> None:
    slopes = torch.rand(2, 4, generator=torch.Generator().manual_seed(5)) * 0.3
    for seed in (6, 7):
        inputs = _inputs(torch.float16, seed)
        want_o, want_cache = _want(inputs, slopes)
        o = td.attention_with_kvcache(**inputs, causal=True, alibi_slopes=slopes, runtime=rt)
        got = o.to(torch.float64).numpy()
        assert np.linalg.norm(got - want_o) / np.linalg.norm(want_o) <= 4e-3
        assert np.array_equal(inputs["k_cache"].to(torch.float64).numpy(), want_cache)
    assert [r.tier for r in rt.history() if r.event == "call"] == [1, 2]
    with pytest.raises(ValueError, match=r"alibi_slopes must be a torch\.Tensor on q's device"):
        td.attention_with_kvcache(**_inputs(torch.float16, 8), alibi_slopes=[0.1] * 4, runtime=rt)  # type: ignore[arg-type]


def test_torch_compile_traces_the_op_whole(rt: Runtime) -> None:
    inputs = _inputs(torch.float16, 3)
    eager_inputs = {n: t.clone() for n, t in inputs.items()}

    def step(q: Any, k_cache: Any, v_cache: Any, k: Any, v: Any, lengths: Any, table: Any) -> Any:
        return (
            td.attention_with_kvcache(
                q, k_cache, v_cache, k=k, v=v, cache_seqlens=lengths, block_table=table, runtime=rt
            )
            * 2
        )

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    got = compiled(*inputs.values())  # tier 1, then the eager call runs tier 2
    want = step(*eager_inputs.values())
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
    assert torch.equal(inputs["k_cache"], eager_inputs["k_cache"])


def test_cuda_like_or_bad_arguments_are_one_line(rt: Runtime) -> None:
    inputs = _inputs(torch.float16, 4)
    inputs["cache_seqlens"] = [30, 7]
    with pytest.raises(ValueError, match=r"cache_seqlens must be a torch\.Tensor on q's device"):
        td.attention_with_kvcache(**inputs, runtime=rt)
    inputs = _inputs(torch.float16, 4)
    with pytest.raises(ValueError, match="window_size"):
        td.attention_with_kvcache(**inputs, window_size=(1,), runtime=rt)  # type: ignore[arg-type]


@pytest.mark.gpu
def test_cuda_tensors_decode_and_append_in_place_on_the_gpu() -> None:
    config = RuntimeConfig(device="cuda", tier2_min_calls=1, tier3=False, tuning_workers=0)
    slopes = torch.rand(2, 4, generator=torch.Generator().manual_seed(9)) * 0.3
    with Runtime(config=config) as rt:
        for seed in (10, 11):  # tier 1, then the compiled kernel on the tensors' memory
            inputs = _inputs(torch.float16, seed)
            want_o, want_cache = _want(inputs, slopes)
            on_gpu = {n: t.cuda() for n, t in inputs.items()}
            o = td.attention_with_kvcache(
                **on_gpu, causal=True, alibi_slopes=slopes.cuda(), runtime=rt
            )
            assert o.is_cuda
            got = o.cpu().to(torch.float64).numpy()
            assert np.linalg.norm(got - want_o) / np.linalg.norm(want_o) <= 4e-3
            assert np.array_equal(on_gpu["k_cache"].cpu().to(torch.float64).numpy(), want_cache)
        assert [r.tier for r in rt.history() if r.event == "call"] == [1, 2]
