"""arch="sm_90a" (and an sm_90 device) routes aligned gemms to gemm_sm90 in the runtime, with keys
that name the family; unaligned ones fall back to the mma.sync gemm with the reason traced."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import generator.gpu
from cache.store import KernelCache
from generator.render import template_hash
from runtime import Runtime, RuntimeConfig
from runtime.backends import resolve_device
from runtime.dispatcher import Dispatcher
from runtime.specialized import clear_memo
from templates import registry
from templates.registry import Route, get_family
from tessera_core.types import GemmProblem, TileConfig
from tests.runtime.runtime_fakes import FakeBackends, qkv

BF16_TOLERANCE = 3e-2  # normwise, against float64: a few bf16 output roundings (2^-8 each)
TUNED = TileConfig(block_m=64, block_n=64, block_k=64, num_warps=8, num_stages=2)


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    got64 = np.asarray(got, dtype=np.float64)
    assert np.all(np.isfinite(got64)), "output has NaN: a poisoned element was never written"
    return float(np.linalg.norm(got64 - want) / np.linalg.norm(want))


def _operands(m: int, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((k, n)).astype(ml_dtypes.bfloat16)
    return a, b


def _config(cache_dir: Path, arch: str = "sm_90a") -> RuntimeConfig:
    return RuntimeConfig(
        device="emulator",
        arch=arch,
        tier2_min_calls=1,
        tier3_min_calls=2,
        tuning_workers=0,
        cache_dirs=(cache_dir,),
    )


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memo()


def test_sm90a_runtime_runs_gemm_sm90_at_tiers_2_and_3_and_matches_float64(
    tmp_path: Path,
) -> None:
    a, b = _operands(96, 136, 200, seed=11)  # ragged M and K tiles; N, K multiples of 8
    want = a.astype(np.float64) @ b.astype(np.float64)
    problem = GemmProblem(96, 136, 200, dtype="bf16")
    key = registry.kernel_key(problem, "sm_90a")
    assert key == "gemm_sm90.bf16.m96.n136.k200.sm_90a"
    KernelCache(cache_dir=tmp_path).put(
        key,
        cubin=b"placeholder",  # the emulator runs the source; it needs only the config
        ptx=None,
        metadata={
            "arch": "sm_90a",
            "problem": problem.to_dict(),
            "config": TUNED.to_dict(),
            "template_hash": template_hash(get_family("gemm_sm90")),
        },
    )
    with Runtime(config=_config(tmp_path)) as rt:
        outs = [rt.gemm(a, b) for _ in range(3)]
        calls = [r for r in rt.history() if r.event == "call"]
        events = [r.event for r in rt.history()]
    assert [r.tier for r in calls] == [1, 2, 3]
    assert [r.kernel_key for r in calls[1:]] == ["gemm_sm90.bf16.sm_90a.generic", key]
    assert calls[2].config == TUNED.to_dict()
    assert "select" not in events  # nothing was refused
    for call, c in zip(calls, outs, strict=True):
        assert c.dtype == a.dtype and c.shape == (96, 136)
        assert _rel_err(c, want) < BF16_TOLERANCE, f"tier {call.tier}"


def test_an_unaligned_gemm_on_sm90a_falls_back_to_mma_sync_with_the_reason_traced(
    tmp_path: Path,
) -> None:
    a, b = _operands(64, 130, 96, seed=12)  # N % 8 != 0: TMA cannot read B's rows
    want = a.astype(np.float64) @ b.astype(np.float64)
    with Runtime(config=_config(tmp_path)) as rt:
        outs = [rt.gemm(a, b) for _ in range(2)]
        history = rt.history()
    (select,) = [r for r in history if r.event == "select"]
    assert select.detail.startswith("gemm serves it: gemm_sm90: tma_alignment: N=130")
    calls = [r for r in history if r.event == "call"]
    assert calls[1].tier == 2 and calls[1].kernel_key == "gemm.bf16.sm_90a.generic"
    assert _rel_err(outs[1], want) < BF16_TOLERANCE


def test_plain_sm90_keeps_the_mma_sync_gemm(tmp_path: Path) -> None:
    a, b = _operands(64, 64, 64, seed=13)
    with Runtime(config=_config(tmp_path, arch="sm_90")) as rt:
        rt.gemm(a, b)
        rt.gemm(a, b)
        keys = [r.kernel_key for r in rt.history() if r.event == "call"]
    assert keys == [None, "gemm.bf16.sm_90.generic"]


@pytest.mark.parametrize(
    ("device_arch", "asked", "want"),
    [("sm_90", None, "sm_90a"), ("sm_90", "sm_90", "sm_90"), ("sm_86", None, "sm_86")],
)
def test_an_sm90_device_targets_sm90a_unless_an_arch_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, device_arch: str, asked: str | None, want: str
) -> None:
    gpu = generator.gpu.GpuProbe(1, device_arch, "ok")
    monkeypatch.setattr(generator.gpu, "probe", lambda: gpu)
    assert resolve_device(RuntimeConfig(device="cuda", arch=asked)) == ("cuda", want)


def test_a_registered_sm90a_attention_family_is_what_the_dispatcher_builds_and_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The registry contract for attention_sm90: one Route line; here a fake family taking
    # head_dim 64 only, so head_dim 32 falls back to attention_fwd with its reason traced.
    def head_dim_64(config: Any, problem: Any, arch: str) -> str | None:
        return None if problem.head_dim == 64 else f"head_dim={problem.head_dim}: 64 only"

    space = types.SimpleNamespace(
        unsupported=lambda problem, arch: (
            None if problem.head_dim == 64 else f"head_dim: {head_dim_64(None, problem, arch)}"
        ),
        valid_configs=lambda problem, arch: [TUNED],
    )
    fake = types.SimpleNamespace(name="attention_sm90_fake", op="attention", space=space)
    real = registry.get_family
    monkeypatch.setattr(registry, "get_family", lambda n: fake if n == fake.name else real(n))
    monkeypatch.setattr(registry, "ROUTES", (Route("attention", "sm_90a", fake.name),))
    registry.select.cache_clear()
    try:
        backends = FakeBackends()
        backends.arch = "sm_90a"
        dispatcher = Dispatcher(RuntimeConfig(tier2_min_calls=1, tuning_workers=0), backends)
        for head_dim in (64, 32):
            q, k, v = qkv(head_dim=head_dim)
            key = (
                "attention",
                "fp16",
                (*q.shape[:3], k.shape[2], head_dim),
                False,
                None,
                (),
            )
            for _ in range(2):
                dispatcher.call(key, (q, k, v))
        history = dispatcher.tracer.history()
        dispatcher.close()
    finally:
        registry.select.cache_clear()
    promoted = [r.kernel_key for r in history if r.event == "promote"]
    assert promoted == [
        "attention_sm90_fake.fp16.d64.noncausal.sm_90a.generic",
        "attention_fwd.fp16.d32.noncausal.sm_90a.generic",
    ]
    (select,) = [r for r in history if r.event == "select"]
    assert select.shape[-1] == 32
    assert (
        select.detail
        == "attention_fwd serves it: attention_sm90_fake: head_dim: head_dim=32: 64 only"
    )
