"""Objective choice and the model objective; the measured one runs only on a GPU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from autotune import objective as objective_module
from autotune.cost_model import estimate
from autotune.objective import (
    MeasuredObjective,
    ModelObjective,
    choose_objective,
    relative_error,
)
from generator.gpu import GpuProbe
from tessera_core.types import AttentionProblem, TileConfig

PROBLEM = AttentionProblem(batch=2, heads=4, seq_q=256, seq_kv=256, head_dim=64)
CONFIG = TileConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2)


@dataclass(frozen=True)
class FakeResources:
    registers: int = 96
    static_smem_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0


@dataclass(frozen=True)
class FakeCompiled:
    resources: FakeResources


class FakeFamily:
    def smem_bytes(self, problem, config):
        return 12345


@pytest.mark.parametrize(
    ("gpu", "arch", "kind"),
    [
        (GpuProbe(1, "sm_90", "ok"), "sm_90", "measured"),
        (GpuProbe(1, "sm_80", "ok"), "sm_90", "model"),  # a different GPU cannot stand in
        (GpuProbe(0, None, "no CUDA device"), "sm_90", "model"),
    ],
)
def test_choose_objective_measures_only_on_the_target_arch(monkeypatch, gpu, arch, kind):
    import generator.gpu

    monkeypatch.setattr(generator.gpu, "probe", lambda: gpu)
    assert choose_objective(arch).kind == kind


def test_require_gpu_says_why_not(monkeypatch):
    import generator.gpu
    from tessera_core.errors import NoDeviceError

    monkeypatch.setattr(generator.gpu, "probe", lambda: GpuProbe(0, None, "no CUDA device"))
    with pytest.raises(NoDeviceError, match="no CUDA device"):
        objective_module.require_gpu("sm_90")


def test_model_objective_is_the_cost_model_on_the_compiled_resources():
    compiled = FakeCompiled(FakeResources())
    evaluation = ModelObjective(arch="sm_90", family=FakeFamily()).evaluate(
        PROBLEM, CONFIG, compiled
    )
    want = estimate(PROBLEM, CONFIG, compiled.resources, dynamic_smem_bytes=12345, arch="sm_90")
    assert evaluation.kind == "model"
    assert evaluation.time_ms == want.time_ms
    assert evaluation.detail["waves"] == want.waves


def test_relative_error_is_normwise_and_fails_on_nan():
    rng = np.random.default_rng(0)
    want = rng.standard_normal((8, 8))
    assert relative_error(want, want) == 0.0
    assert relative_error(want * 1.01, want) == pytest.approx(0.01)
    poisoned = np.full_like(want, np.nan)
    assert not relative_error(poisoned, want) <= 1.0


@pytest.mark.gpu
def test_measured_objective_times_a_correct_kernel_on_the_gpu():
    from generator.compile import compile_kernel
    from generator.gpu import probe
    from generator.render import render
    from templates.registry import get_family

    arch = probe().arch
    assert arch is not None
    family = get_family("attention")
    config = family.default_config(PROBLEM, arch)
    compiled = compile_kernel(render(family, PROBLEM, config, arch=arch), arch=arch)
    measured = MeasuredObjective(arch=arch)
    try:
        evaluation = measured.evaluate(PROBLEM, config, compiled)
    finally:
        measured.close()
    assert evaluation.kind == "measured"
    assert evaluation.detail["runs"] >= 10
    assert 0 < evaluation.detail["min_ms"] <= evaluation.time_ms <= evaluation.detail["max_ms"]


@dataclass(frozen=True)
class FakeCubinCompiled:
    resources: FakeResources
    cubin: bytes = b"not-a-real-cubin"


def test_model_objective_reads_the_sass_main_loop_of_the_cubin(monkeypatch):
    import generator.sass

    loop = {"HMMA": 64, "LDSM": 16, "MUFU": 34, "BAR": 1, "IMAD": 3000}
    monkeypatch.setattr(generator.sass, "kernel_and_loop_counts", lambda cubin: ({}, loop))
    evaluation = ModelObjective(arch="sm_90", family=FakeFamily()).evaluate(
        PROBLEM, CONFIG, FakeCubinCompiled(FakeResources())
    )
    assert evaluation.detail["instruction_source"] == "sass"
    assert evaluation.detail["bound"] == "issue"  # 3000 integer instructions an iteration


def test_model_objective_falls_back_to_the_analytical_mix_without_sass(monkeypatch):
    import generator.sass
    from tessera_core.errors import CudaError

    def broken(cubin):
        raise CudaError("cuobjdump -sass failed")

    monkeypatch.setattr(generator.sass, "kernel_and_loop_counts", broken)
    compiled = FakeCubinCompiled(FakeResources())
    evaluation = ModelObjective(arch="sm_90", family=FakeFamily()).evaluate(
        PROBLEM, CONFIG, compiled
    )
    assert evaluation.detail["instruction_source"] == "analytic"
    skipped = ModelObjective(arch="sm_90", family=FakeFamily(), read_sass=False)
    assert skipped.evaluate(PROBLEM, CONFIG, compiled).time_ms == evaluation.time_ms


def test_prefetch_disassembles_each_new_cubin_once_side_by_side(monkeypatch):
    import threading

    import generator.sass

    calls: list[bytes] = []
    both_running = threading.Barrier(2, timeout=10)  # passes only if two run at once

    def counts(cubin):
        calls.append(cubin)
        both_running.wait()
        return ({}, {"HMMA": len(cubin)})

    monkeypatch.setattr(generator.sass, "kernel_and_loop_counts", counts)
    outcomes = [
        FakeCubinCompiled(FakeResources(), b"cubin-a"),
        FakeCubinCompiled(FakeResources(), b"cubin-bb"),
        FakeCubinCompiled(FakeResources(), b"cubin-a"),  # the same kernel twice
        ValueError("a failed compile has no cubin"),
    ]
    model = ModelObjective(arch="sm_90", family=FakeFamily())
    model.prefetch(outcomes, jobs=4)
    assert sorted(calls) == [b"cubin-a", b"cubin-bb"]
    calls.clear()
    ModelObjective(arch="sm_90", family=FakeFamily(), read_sass=False).prefetch(outcomes, jobs=4)
    assert calls == []
