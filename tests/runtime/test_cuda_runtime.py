"""device='cuda': tiers 1-3 on the GPU agree, device arrays stay on the device (GPU only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import Runtime, RuntimeConfig, load_specialized
from runtime.specialized import clear_memo, open_cache
from tessera_core.errors import LaunchError
from tessera_core.types import AttentionProblem, GemmProblem, TileConfig

FP16_TOLERANCE = 4e-3
SHAPE = (1, 2, 128, 64)
CONFIG = TileConfig(
    block_m=64, block_n=64, block_k=16, num_warps=4, num_stages=2, options=(("q_in_regs", 1),)
)


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    scores = q64 @ np.swapaxes(k64, -1, -2) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v64


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    got64 = got.astype(np.float64)
    assert np.all(np.isfinite(got64)), "NaN in the output: an element was never written"
    return float(np.linalg.norm(got64 - want) / np.linalg.norm(want))


def _put_specialized(cache_dir: Path, arch: str) -> tuple[str, TileConfig]:
    """Put the specialized kernel of SHAPE for `arch` where the runtime looks: the family the
    registry selects there (attention_sm90 on sm_90a, FA2's otherwise), under its key."""
    from generator.compile import compile_kernel
    from generator.render import render
    from templates.registry import select

    problem = AttentionProblem(*SHAPE[:3], SHAPE[2], SHAPE[3])
    selection = select(problem, arch)
    family = selection.family
    config = CONFIG if family.name == "attention_fwd" else family.default_config(problem, arch)
    rendered = render(family, problem, config, specialized=True)
    compiled = compile_kernel(rendered, arch=arch)
    key = selection.kernel_key(problem)
    open_cache([cache_dir]).put(
        key,
        cubin=compiled.cubin,
        ptx=compiled.ptx,
        metadata={
            "arch": arch,
            "problem": problem.to_dict(),
            "config": config.to_dict(),
            "kernel_name": rendered.kernel_name,
            # load_specialized serves only entries of the current template source.
            "template_hash": rendered.template_hash,
        },
    )
    return key, config


def _runtime(tmp_path: Path) -> Runtime:
    clear_memo()
    config = RuntimeConfig(
        device="cuda",
        tier2_min_calls=1,
        tier3_min_calls=2,
        tuning_workers=0,
        cache_dirs=(tmp_path,),
    )
    rt = Runtime(config=config)
    _put_specialized(tmp_path, rt.arch)
    return rt


@pytest.mark.gpu
def test_cuda_tiers_agree_on_numpy_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    q, k, v = (rng.standard_normal(SHAPE).astype(np.float16) for _ in range(3))
    want = _reference(q, k, v)
    with _runtime(tmp_path) as rt:
        outs = [rt.attention(q, k, v) for _ in range(3)]
        tiers = [r.tier for r in rt.history() if r.event == "call"]
    assert tiers == [1, 2, 3]
    for tier, out in zip(tiers, outs, strict=True):
        assert isinstance(out, np.ndarray) and out.dtype == np.float16
        assert _rel_err(out, want) < FP16_TOLERANCE, f"tier {tier}"


@pytest.mark.gpu
def test_device_arrays_are_used_in_place_and_returned_on_the_device(tmp_path: Path) -> None:
    from runtime.cuda_backend import DeviceOutput, to_device_output

    rng = np.random.default_rng(12)
    host = [rng.standard_normal(SHAPE).astype(np.float16) for _ in range(3)]
    want = _reference(*host)
    q, k, v = (to_device_output(x) for x in host)
    with _runtime(tmp_path) as rt:
        outs = [rt.attention(q, k, v) for _ in range(3)]
        tiers = [r.tier for r in rt.history() if r.event == "call"]
    assert tiers == [1, 2, 3]
    for tier, out in zip(tiers, outs, strict=True):
        assert isinstance(out, DeviceOutput)
        assert _rel_err(out.numpy(), want) < FP16_TOLERANCE, f"tier {tier}"


def test_the_specialized_entry_put_here_is_served(tmp_path: Path) -> None:
    """Runs everywhere: the GPU tests' tier 3 depends on load_specialized accepting this entry."""
    clear_memo()
    key, config = _put_specialized(tmp_path, "sm_80")
    loaded = load_specialized(key, cache_dirs=[tmp_path])
    assert config == CONFIG and loaded.config == CONFIG and loaded.cubin and loaded.ptx


def test_the_specialized_entry_put_for_hopper_is_the_routed_family(tmp_path: Path) -> None:
    """Runs everywhere: on an H100 the runtime's arch is sm_90a, where attention routes to
    attention_sm90; an FA2 entry under an `attention_fwd` key would never reach tier 3."""
    clear_memo()
    key, config = _put_specialized(tmp_path, "sm_90a")
    loaded = load_specialized(key, cache_dirs=[tmp_path])
    assert key.startswith("attention_sm90.") and loaded.config == config != CONFIG


@pytest.mark.gpu
def test_load_specialized_gives_a_launchable_kernel_on_the_gpu(tmp_path: Path) -> None:
    from generator.gpu import probe

    clear_memo()
    arch = probe().arch
    assert arch is not None
    key, config = _put_specialized(tmp_path, arch)
    loaded = load_specialized(key, cache_dirs=[tmp_path])
    assert loaded.kernel is not None and loaded.config == config


class _FakeBuffer:
    def __init__(self, nbytes: int) -> None:
        self.ptr, self.nbytes, self.freed = 0x1000 + nbytes, nbytes, False

    def free(self) -> None:
        self.freed = True


def test_a_failed_launch_frees_every_buffer_it_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs everywhere: generator.device and the loaded kernel are fakes."""
    import types

    import generator
    from runtime.cuda_backend import CudaKernel
    from runtime.tiers import Tier

    buffers: list[_FakeBuffer] = []

    def allocate(nbytes: int) -> _FakeBuffer:
        buffers.append(_FakeBuffer(nbytes))
        return buffers[-1]

    fake = types.SimpleNamespace(allocate=allocate, to_device=lambda array: allocate(array.nbytes))
    monkeypatch.setattr(generator, "device", fake, raising=False)

    def launch(params: object, geometry: object) -> None:
        raise LaunchError("cuLaunchKernel failed", kernel="gemm", grid=(1, 1, 1), block=(1, 1, 1))

    loaded = types.SimpleNamespace(launch=launch, device=types.SimpleNamespace(sync=lambda: None))
    problem = GemmProblem(64, 64, 32)
    config = TileConfig(block_m=32, block_n=32, block_k=32, num_warps=4, num_stages=2)
    kernel = CudaKernel(
        tier=Tier.GENERIC, problem=problem, config=config, kernel_key="k", loaded=loaded
    )
    a, b = np.ones((64, 32), np.float16), np.ones((32, 64), np.float16)
    with pytest.raises(LaunchError):
        kernel.run((a, b), causal=False, scale=None)
    assert len(buffers) == 3 and all(buffer.freed for buffer in buffers)  # a, b and c
