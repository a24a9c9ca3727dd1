"""attention_with_kvcache on device='cuda' (runtime.cuda_decode): tiers 1-3 against float64 on a
GPU (gpu-marked), and everywhere the CUDA path's own code (argument packing, zeroed counters,
launch geometry, the in-place append, freeing) with a fake generator.device whose buffers are
host memory and whose "launch" runs the same kernel source on the host emulator."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cuda_fakes import EmulatedLaunch, fake_device

from generator.render import render
from runtime import Runtime, RuntimeConfig
from runtime.cuda_backend import CudaBackends
from runtime.cuda_decode import CudaDecodeKernel
from runtime.signature import Signature
from runtime.specialized import clear_memo, open_cache
from runtime.tiers import Tier
from runtime.validate_decode import decode_call
from templates.attention_decode import space
from templates.attention_decode.reference import attention_decode_reference
from templates.registry import get_family, select
from tessera_core.errors import LaunchError
from tessera_core.types import AttentionDecodeProblem

FP16_TOLERANCE = 4e-3  # O against float64, normwise relative
LSE_TOLERANCE = 1e-3
# Ragged, paged by 16, GQA 8:2, two new tokens, causal, per-(batch, head) ALiBi slopes.
BATCH, SEQ_Q, HEADS_Q, HEADS_KV, HEAD_DIM, PAGE = 3, 2, 8, 2, 64, 16
LENGTHS = (5, 150, 77)
PAGES_PER_SEQ = 12


def _inputs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pages = BATCH * PAGES_PER_SEQ

    def half(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float16)

    return {
        "q": half(BATCH, SEQ_Q, HEADS_Q, HEAD_DIM),
        "k_cache": half(pages, PAGE, HEADS_KV, HEAD_DIM),
        "v_cache": half(pages, PAGE, HEADS_KV, HEAD_DIM),
        "k": half(BATCH, SEQ_Q, HEADS_KV, HEAD_DIM),
        "v": half(BATCH, SEQ_Q, HEADS_KV, HEAD_DIM),
        "cache_seqlens": np.asarray(LENGTHS, dtype=np.int32),
        "block_table": rng.permutation(pages).astype(np.int32).reshape(BATCH, PAGES_PER_SEQ),
        "alibi_slopes": (rng.random((BATCH, HEADS_Q)) * 0.3).astype(np.float32),
    }


def _call(rt: Runtime, inputs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    rest = {n: v for n, v in inputs.items() if n not in ("q", "k_cache", "v_cache")}
    return rt.attention_with_kvcache(  # type: ignore[no-any-return]
        inputs["q"], inputs["k_cache"], inputs["v_cache"], causal=True, return_lse=True, **rest
    )


def _check(inputs: dict[str, Any], o: np.ndarray, lse: np.ndarray, label: str) -> None:
    """O and LSE against float64 on the inputs' caches before the call; the caches appended."""
    fresh = {**inputs, "k_cache": inputs["k_cache"].copy(), "v_cache": inputs["v_cache"].copy()}
    want_o, want_lse = _reference(fresh, before_append=True)
    got = np.asarray(o, dtype=np.float64)
    assert np.all(np.isfinite(got)), f"{label}: NaN in O (an element was never written)"
    err = float(np.linalg.norm(got - want_o) / np.linalg.norm(want_o))
    assert err <= FP16_TOLERANCE, f"{label}: O relative error {err:.3g}"
    np.testing.assert_allclose(lse, want_lse, atol=LSE_TOLERANCE, err_msg=label)


def _reference(inputs: dict[str, Any], *, before_append: bool) -> tuple[np.ndarray, np.ndarray]:
    """Float64 (O, LSE); with before_append the caches do not hold the new keys yet (the
    reference appends them), else they already do (the call appended them in place)."""
    cache_seqlens = inputs["cache_seqlens"]
    k = v = None
    if before_append:
        k, v = inputs["k"], inputs["v"]
    else:
        cache_seqlens = cache_seqlens + SEQ_Q
    return attention_decode_reference(
        inputs["q"], inputs["k_cache"], inputs["v_cache"], cache_seqlens=cache_seqlens, k=k,
        v=v, block_table=inputs["block_table"], causal=True, alibi_slopes=inputs["alibi_slopes"],
    )  # fmt: skip


def _appended(before: dict[str, Any], after: dict[str, Any]) -> bool:
    want_k, want_v = before["k_cache"].copy(), before["v_cache"].copy()
    attention_decode_reference(
        before["q"], want_k, want_v, cache_seqlens=before["cache_seqlens"], k=before["k"],
        v=before["v"], block_table=before["block_table"],
    )  # fmt: skip
    return np.array_equal(after["k_cache"], want_k) and np.array_equal(after["v_cache"], want_v)


# -- on a GPU (the lead runs these: pytest -m gpu) -----------------------------------------------
def _put_specialized(cache_dir: Path, problem: AttentionDecodeProblem, arch: str) -> None:
    from generator.compile import compile_kernel

    selection = select(problem, arch)
    config = space.tile(16, 64, 4, 2, 4)
    rendered = render(selection.family, problem, config, specialized=True, arch=arch)
    compiled = compile_kernel(rendered, arch=arch)
    open_cache([cache_dir]).put(
        selection.kernel_key(problem),
        cubin=compiled.cubin,
        ptx=compiled.ptx,
        metadata={
            "arch": arch,
            "problem": problem.to_dict(),
            "config": config.to_dict(),
            "kernel_name": rendered.kernel_name,
            "template_hash": rendered.template_hash,
        },
    )


@pytest.mark.gpu
def test_cuda_decode_tiers_agree_with_float64(tmp_path: Path) -> None:
    clear_memo()
    config = RuntimeConfig(
        device="cuda", tier2_min_calls=1, tier3_min_calls=2, tuning_workers=0,
        cache_dirs=(tmp_path,),
    )  # fmt: skip
    with Runtime(config=config) as rt:
        first = _inputs(1)
        key = decode_call(
            first["q"], first["k_cache"], first["v_cache"], k=first["k"], v=first["v"],
            cache_seqlens=first["cache_seqlens"], block_table=first["block_table"], causal=True,
            scale=None, window_size=(-1, -1), softcap=0.0, num_splits=0,
            alibi_slopes=first["alibi_slopes"],
        ).key  # fmt: skip
        problem = Signature.from_key(key).problem()
        assert isinstance(problem, AttentionDecodeProblem)
        _put_specialized(tmp_path, problem, rt.arch)
        for seed, tier in ((1, Tier.REFERENCE), (2, Tier.GENERIC), (3, Tier.SPECIALIZED)):
            inputs = _inputs(seed)
            before = {n: np.copy(x) for n, x in inputs.items()}
            o, lse = _call(rt, inputs)
            assert isinstance(o, np.ndarray) and o.dtype == np.float16
            _check(before, o, lse, f"tier {tier}")
            assert _appended(before, inputs), f"tier {tier}: new k/v not appended in place"
            assert rt.history()[-1].tier == tier
        # A forced split count and a second shape of the generic kernel's key (tier 2).
        inputs = _inputs(4)
        before = {n: np.copy(x) for n, x in inputs.items()}
        o, lse = _call(rt, {**inputs, "num_splits": 3})
        _check(before, o, lse, "tier 3, 3 splits")


@pytest.mark.gpu
def test_cuda_decode_on_device_arrays_appends_on_the_device() -> None:
    from runtime.cuda_backend import DeviceOutput, to_device_output

    clear_memo()
    config = RuntimeConfig(device="cuda", tier2_min_calls=1, tier3=False, tuning_workers=0)
    with Runtime(config=config) as rt:
        for seed in (5, 6):  # tier 1 (host copies), then the kernel on the caller's memory
            before = _inputs(seed)
            on_device = {n: to_device_output(x) for n, x in before.items()}
            o, lse = _call(rt, on_device)
            assert isinstance(o, DeviceOutput) and isinstance(lse, DeviceOutput)
            _check(before, o.numpy(), lse.numpy(), f"call {seed}")
            after = {n: x.numpy() for n, x in on_device.items()}
            assert _appended(before, after), f"call {seed}: not appended on the device"
        assert [r.tier for r in rt.history() if r.event == "call"] == [1, 2]


# -- everywhere: the CUDA path with a fake device that emulates the launch ----------------------
def _decode_inputs(inputs: dict[str, Any], num_splits: int = 0) -> tuple[Any, ...]:
    return decode_call(
        inputs["q"], inputs["k_cache"], inputs["v_cache"], k=inputs["k"], v=inputs["v"],
        cache_seqlens=inputs["cache_seqlens"], block_table=inputs["block_table"], causal=True,
        scale=None, window_size=(-1, -1), softcap=0.0, num_splits=num_splits,
        alibi_slopes=inputs["alibi_slopes"],
    ).inputs  # fmt: skip


@pytest.mark.parametrize("tier", [Tier.GENERIC, Tier.SPECIALIZED])
def test_the_cuda_launch_packs_zeroes_appends_and_frees(
    monkeypatch: pytest.MonkeyPatch, tier: Tier
) -> None:
    memory = fake_device(monkeypatch)
    inputs = _inputs(5)
    before = {n: np.copy(x) for n, x in inputs.items()}
    call_inputs = _decode_inputs(inputs, num_splits=4)
    problem = AttentionDecodeProblem(
        BATCH, HEADS_Q, SEQ_Q, 256, HEAD_DIM, "fp16", True, heads_kv=HEADS_KV, page_size=PAGE,
        alibi="batch_heads",
    )  # fmt: skip
    config = space.tile(16, 32, 2, 2)
    family = get_family("attention_decode")
    specialized = tier is Tier.SPECIALIZED
    source = render(family, problem, config, specialized=specialized, arch="sm_80").source
    loaded = EmulatedLaunch(source, family.kernel_name, memory)
    kernel = CudaDecodeKernel(tier=tier, config=config, kernel_key="k", loaded=loaded,
                              family=family, arch="sm_80")  # fmt: skip
    o, lse = kernel.run(call_inputs, causal=True, scale=None)
    _check(before, o, lse, str(tier))
    assert _appended(before, inputs), "new k/v not copied back into the caller's caches"
    (geometry,) = loaded.geometries
    rows = HEADS_Q // HEADS_KV * SEQ_Q
    assert geometry.grid == (4, HEADS_KV * -(-rows // 16), BATCH)
    assert geometry.block == (64, 1, 1) and geometry.smem_bytes == space.smem_bytes(problem, config)
    assert all(b.freed for b in memory)
    assert sum(b.zeroed for b in memory) == 1  # the split counters, before the launch


def test_the_cuda_backend_serves_decode_at_tiers_1_and_2(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = fake_device(monkeypatch)

    def compile_for_arch(problem: Any, config: Any, arch: str, *, specialized: bool) -> Any:
        rendered = render(select(problem, arch).family, problem, config, specialized=specialized,
                          arch=arch)  # fmt: skip
        return types.SimpleNamespace(
            cubin=rendered.source.encode(), kernel_name=rendered.kernel_name, ptx=None
        )

    monkeypatch.setattr("runtime.cuda_backend.compile_for_arch", compile_for_arch)
    config = RuntimeConfig(device="cuda", arch="sm_80", tier2_min_calls=1, tuning_workers=0)
    with Runtime(config=config, backends=CudaBackends(config, arch="sm_80")) as rt:
        for seed in (6, 7):
            inputs = _inputs(seed)
            before = {n: np.copy(x) for n, x in inputs.items()}
            o, lse = _call(rt, inputs)
            _check(before, o, lse, f"call {seed}")
            assert _appended(before, inputs), f"call {seed}: no append"
        assert [r.tier for r in rt.history() if r.event == "call"] == [1, 2]
    assert memory and all(b.freed for b in memory)


def test_a_failed_decode_launch_frees_everything_and_appends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory = fake_device(monkeypatch)

    def launch(params: object, geometry: object) -> None:
        raise LaunchError("cuLaunchKernel failed", kernel="decode", grid=(1, 1, 1), block=(1, 1, 1))

    loaded = types.SimpleNamespace(launch=launch, device=types.SimpleNamespace(sync=lambda: None))
    family = get_family("attention_decode")
    kernel = CudaDecodeKernel(
        tier=Tier.GENERIC, config=space.tile(16, 32, 2, 2), kernel_key="k", loaded=loaded,
        family=family, arch="sm_80",
    )  # fmt: skip
    inputs = _inputs(8)
    k_cache = inputs["k_cache"].copy()
    with pytest.raises(LaunchError):
        kernel.run(_decode_inputs(inputs), causal=True, scale=None)
    assert len(memory) == 13 and all(b.freed for b in memory)  # 8 inputs, 5 outputs
    assert np.array_equal(inputs["k_cache"], k_cache)


def test_cuda_arrays_are_used_in_place_at_tiers_1_and_2(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every argument a CUDA array: tier 1 reads host copies and writes the appended caches
    # back to the device; tier 2 launches on the caller's memory (the kernel appends there)
    # and hands O and LSE over as DeviceOutputs.
    from cuda_fakes import FakeCudaArray, fake_cuda_arrays

    from runtime.cuda_backend import DeviceOutput

    memory = fake_device(monkeypatch)
    fake_cuda_arrays(monkeypatch, memory)
    monkeypatch.setattr("runtime.cuda_backend.compile_for_arch", _compile_to_source)
    config = RuntimeConfig(device="cuda", arch="sm_80", tier2_min_calls=1, tuning_workers=0)
    with Runtime(config=config, backends=CudaBackends(config, arch="sm_80")) as rt:
        for seed in (9, 10):
            before = _inputs(seed)
            on_device = {n: FakeCudaArray(x, memory) for n, x in before.items()}
            o, lse = _call(rt, on_device)
            assert isinstance(o, DeviceOutput) and isinstance(lse, DeviceOutput)
            _check(before, o.numpy(), lse.numpy(), f"call {seed}")
            after = {n: x.host() for n, x in on_device.items()}
            assert _appended(before, after), f"call {seed}: not appended on the device"
        assert [r.tier for r in rt.history() if r.event == "call"] == [1, 2]
        with pytest.raises(ValueError, match="block_table must live where q does"):
            _call(rt, {**on_device, "block_table": before["block_table"]})
        kept = {id(o.buffer), id(lse.buffer)}  # the last call's, handed over
        assert all(b.freed for b in memory if not b.caller and id(b) not in kept)


def _compile_to_source(problem: Any, config: Any, arch: str, *, specialized: bool) -> Any:
    rendered = render(select(problem, arch).family, problem, config, specialized=specialized,
                      arch=arch)  # fmt: skip
    return types.SimpleNamespace(
        cubin=rendered.source.encode(), kernel_name=rendered.kernel_name, ptx=None
    )
