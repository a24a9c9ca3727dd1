"""MeasuredObjective's logic with a fake generator.device: check, poisoning, rotation, timing."""

from __future__ import annotations

import types

import numpy as np
import pytest

from autotune import objective as objective_module
from autotune.objective import TIMED_RUNS, MeasuredObjective
from tessera_core.errors import IncorrectResultError, LaunchError
from tessera_core.types import AttentionProblem, GemmProblem, TileConfig

PROBLEM = GemmProblem(m=64, n=48, k=32)
CONFIG = TileConfig(block_m=32, block_n=16, block_k=16, num_warps=2, num_stages=2)


class FakeBuffer:
    def __init__(self, nbytes: int, memory: dict[int, FakeBuffer]):
        self.nbytes, self.data, self.freed = nbytes, None, False
        self.ptr = len(memory) + 1
        memory[self.ptr] = self

    def poison(self, element_bytes: int, dtype_name: str) -> None:
        self.data = "nan"

    def download(self, shape, dtype):
        if isinstance(self.data, str):
            return np.full(shape, np.nan, dtype)
        return np.asarray(self.data, dtype).reshape(shape)

    def zero(self) -> None:
        self.data = np.zeros(self.nbytes // 4, np.float32)

    def free(self) -> None:
        self.freed = True


def fake_device(behaviour: str):
    """A generator.device stand-in whose kernel computes C = A @ B or attention (or gets it
    wrong, writes nothing, faults on the device, or runs out of memory)."""
    memory: dict[int, FakeBuffer] = {}
    launches: list[dict[str, int]] = []
    timed_sets: list[dict[str, int]] = []

    def allocate(nbytes):
        if behaviour == "oom" and len(memory) >= 5:
            raise MemoryError("fake cuMemAlloc: out of memory")
        return FakeBuffer(nbytes, memory)

    def to_device(array):
        buffer = allocate(array.nbytes)
        buffer.data = np.array(array)
        return buffer

    def sync():
        if behaviour == "fault":
            raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    class Kernel:
        name = "fake"
        device = types.SimpleNamespace(sync=sync)

        def launch(self, params, geometry, stream=None):
            launches.append(params)
            if "dout" in params:  # attention_bwd: adds into dQ as the atomic kernel does
                from templates.attention_bwd.reference import attention_bwd_reference

                names = ("q", "k", "v", "o", "lse", "dout")
                q, k, v, o, lse, do = (memory[params[n]].data for n in names)
                dq, dk, dv = attention_bwd_reference(q, k, v, o, lse, do, causal=True)
                dq_buffer = memory[params["dq"]]
                if isinstance(dq_buffer.data, str):  # poisoned, never zeroed
                    dq_buffer.data = np.full(dq.shape, np.nan, np.float32)
                elif dq_buffer.data is None:  # a timing set: whatever the memory held
                    dq_buffer.data = np.zeros(dq.shape, np.float32)
                dq_buffer.data = dq_buffer.data.reshape(dq.shape) + dq
                memory[params["dk"]].data = (dk * (1.05 if behaviour == "wrong" else 1.0)).astype(
                    np.float16
                )
                memory[params["dv"]].data = dv.astype(np.float16)
                return
            if "q" in params:
                from templates.attention.reference import attention_reference

                q, k, v = (memory[params[n]].data for n in "qkv")
                o, lse = attention_reference(q, k, v, causal=True)
                memory[params["o"]].data = o.astype(np.float16)
                memory[params["lse"]].data = lse.astype(np.float32)
                return
            a, b = memory[params["a"]].data, memory[params["b"]].data
            c = a.astype(np.float32) @ b.astype(np.float32)
            if behaviour == "wrong":
                c = c * 1.05
            if behaviour != "silent":
                memory[params["c"]].data = c.astype(np.float16)

    def load(cubin, kernel_name, smem_bytes, *, ptx=None):
        return Kernel()

    def time_kernel(kernel, params_list, geometry, *, warmup, repetitions):
        timed_sets.extend(params_list)
        for i in range(warmup + repetitions):
            kernel.launch(params_list[i % len(params_list)], geometry)
        return [1.0 + 0.01 * i for i in range(repetitions)]

    module = types.SimpleNamespace(
        allocate=allocate, to_device=to_device, load=load, time_kernel=time_kernel
    )
    return module, memory, timed_sets


class FakeFamily:
    def launch_geometry(self, problem, config):
        return types.SimpleNamespace(smem_bytes=0, grid=(1, 1, 1), block=(64, 1, 1))

    def make_params(self, problem, *, pointers):
        return dict(pointers)


COMPILED = types.SimpleNamespace(cubin=b"", ptx="", kernel_name="gemm")


def evaluate(monkeypatch, behaviour: str):
    import generator

    module, memory, timed_sets = fake_device(behaviour)
    monkeypatch.setattr(generator, "device", module, raising=False)
    measured = MeasuredObjective(arch="sm_90", family=FakeFamily())
    return measured, memory, timed_sets


def test_a_correct_kernel_is_timed_with_rotated_inputs(monkeypatch):
    measured, memory, timed_sets = evaluate(monkeypatch, "correct")
    evaluation = measured.evaluate(PROBLEM, CONFIG, COMPILED)
    assert evaluation.kind == "measured"
    assert evaluation.detail["runs"] == TIMED_RUNS
    assert evaluation.time_ms == pytest.approx(np.median([1.0 + 0.01 * i for i in range(10)]))
    # A tiny problem: the 16-set cap on rotation; every set has its own buffers.
    assert len(timed_sets) == objective_module.MAX_ROTATION_SETS
    for name in ("a", "b", "c"):
        assert len({params[name] for params in timed_sets}) == len(timed_sets)
    measured.close()
    assert all(buffer.freed for buffer in memory.values())


def test_a_wrong_kernel_is_rejected(monkeypatch):
    measured, _, _ = evaluate(monkeypatch, "wrong")
    with pytest.raises(IncorrectResultError) as info:
        measured.evaluate(PROBLEM, CONFIG, COMPILED)
    assert info.value.error == pytest.approx(0.05, rel=0.1)


def test_a_kernel_that_writes_nothing_fails_on_the_poison(monkeypatch):
    measured, _, _ = evaluate(monkeypatch, "silent")
    with pytest.raises(IncorrectResultError):
        measured.evaluate(PROBLEM, CONFIG, COMPILED)


def test_rows_that_see_no_key_do_not_fail_the_check(monkeypatch):
    # Causal with seq_q > seq_kv: the first rows see no key, O = 0 and LSE = -inf in both the
    # kernel's output and the reference; -inf - -inf must not count as an error.
    measured, _, _ = evaluate(monkeypatch, "correct")
    problem = AttentionProblem(1, 2, 48, 16, 16, causal=True)
    evaluation = measured.evaluate(problem, CONFIG, COMPILED)
    assert evaluation.kind == "measured"
    measured.close()


def test_a_fault_in_the_correctness_run_is_a_launch_error(monkeypatch):
    measured, _, _ = evaluate(monkeypatch, "fault")
    with pytest.raises(LaunchError, match="ILLEGAL_ADDRESS"):
        measured.evaluate(PROBLEM, CONFIG, COMPILED)


def test_buffers_of_a_set_that_ran_out_of_memory_are_freed(monkeypatch):
    measured, memory, _ = evaluate(monkeypatch, "oom")
    with pytest.raises(MemoryError):
        measured.evaluate(PROBLEM, CONFIG, COMPILED)
    measured.close()
    assert memory and all(buffer.freed for buffer in memory.values())


@pytest.mark.parametrize("behaviour", ["correct", "wrong"])
def test_the_backward_is_checked_with_dq_zeroed_before_its_atomics(monkeypatch, behaviour):
    from templates.attention_bwd import space
    from tessera_core.types import AttentionBackwardProblem

    measured, _, timed_sets = evaluate(monkeypatch, behaviour)
    problem = AttentionBackwardProblem(1, 2, 24, 40, 32, causal=True)
    config = space.tile(32, 32, 2, 1, 0)
    if behaviour == "wrong":
        with pytest.raises(IncorrectResultError, match="dk rel_err"):
            measured.evaluate(problem, config, COMPILED)
        return
    assert measured.evaluate(problem, config, COMPILED).kind == "measured"
    assert {"q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv"} <= set(timed_sets[0])
