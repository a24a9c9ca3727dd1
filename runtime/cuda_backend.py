"""device='cuda': tiers 2 and 3 launch on the GPU; NumPy inputs are copied, device arrays are not.

UNVERIFIED on hardware beyond the gpu-marked tests: written against generator.device. Not yet
run: the CUDA array interface / DLPack path with real torch or cupy tensors (the producer's
stream is not waited on: the caller orders it, see runtime.arrays), and bf16 DeviceOutputs,
which the CUDA array interface can only describe as opaque '<V2' (no bfloat16 typestr), so
consumers, and the runtime itself when one is fed back as an input, are expected to refuse them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.arrays import NUMPY_DTYPES, device_array
from runtime.backends import (
    COMPILED_OPS,
    ReferenceKernel,
    cached_specialized,
    compile_for_arch,
    tune_into_cache,
)
from runtime.config import RuntimeConfig
from runtime.tiers import Kernel, Tier
from templates.family import Family, launch_params
from tessera_core.types import AttentionProblem, DType, GemmProblem, Problem, TileConfig

_LSE_DTYPE = np.dtype(np.float32)


@dataclass
class DeviceOutput:
    """A kernel's output left on the GPU (the inputs were device arrays): CUDA array interface v3.

    It owns its buffer; keep it alive while a consumer (torch.as_tensor, cupy.asarray) uses it.
    """

    buffer: Any
    shape: tuple[int, ...]
    dtype: np.dtype
    _typestr: str = field(init=False)

    def __post_init__(self) -> None:
        # CAI has no bfloat16 typestr: bf16 output is described as opaque 2-byte void.
        self._typestr = "<f2" if self.dtype == np.float16 else self.dtype.str

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "typestr": self._typestr,
            "data": (self.buffer.ptr, False),
            "version": 3,
            "strides": None,
            "stream": None,
        }

    def numpy(self) -> np.ndarray:
        return self.buffer.download(self.shape, self.dtype)

    def __del__(self) -> None:
        # At interpreter shutdown the driver may already be gone.
        with contextlib.suppress(Exception):
            self.buffer.free()


def to_host(array: Any) -> np.ndarray:
    """A NumPy copy of a device array (CUDA array interface or DLPack)."""
    from cuda.bindings import driver

    from generator.device import current_device
    from generator.toolchain import check

    view = device_array(array)
    dtype = NUMPY_DTYPES[view.dtype] if view.dtype else np.dtype(view.dtype_text)  # lse: float32
    out = np.empty(view.shape, dtype=dtype)
    current_device()  # the copy needs a current context in this thread
    check(driver.cuMemcpyDtoH(out.ctypes.data, view.pointer, out.nbytes), call="cuMemcpyDtoH")
    return out


def to_device_output(array: np.ndarray) -> DeviceOutput:
    from generator import device

    data = np.ascontiguousarray(array)
    return DeviceOutput(device.to_device(data), data.shape, data.dtype)


class DeviceReferenceKernel:
    """Tier 1 on a CUDA machine: device-array inputs are copied to the host for the reference
    and the result copied back, so every tier returns the same kind of array."""

    tier = Tier.REFERENCE
    kernel_key: str | None = None
    config: TileConfig | None = None

    def __init__(self, op: str) -> None:
        self._host = ReferenceKernel(op)

    def run(self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None) -> tuple[Any, Any]:
        if isinstance(inputs[0], np.ndarray):
            return self._host.run(inputs, causal=causal, scale=scale)
        out, lse = self._host.run(tuple(to_host(x) for x in inputs), causal=causal, scale=scale)
        lse_out = None if lse is None else to_device_output(np.asarray(lse, dtype=_LSE_DTYPE))
        if isinstance(out, tuple):  # attention_bwd's (dq, dk, dv)
            return tuple(to_device_output(x) for x in out), lse_out
        return to_device_output(out), lse_out


class CudaKernel:
    """A loaded kernel of one problem class (tier 2) or one problem (tier 3)."""

    def __init__(
        self,
        *,
        tier: Tier,
        problem: Problem,
        config: TileConfig,
        kernel_key: str,
        loaded: Any,
        family: Family | None = None,
    ) -> None:
        """`family`: the one serving `problem` on the backend's arch (default: the op's)."""
        from templates.registry import get_family

        self.tier = tier
        self.config: TileConfig | None = config
        self.kernel_key: str | None = kernel_key
        self._family = family or get_family(problem.op)
        self._loaded = loaded
        self._op = problem.op

    def run(self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None) -> tuple[Any, Any]:
        from generator import device

        assert self.config is not None
        on_host = isinstance(inputs[0], np.ndarray)
        shapes = [x.shape if on_host else device_array(x).shape for x in inputs]
        dtype = inputs[0].dtype if on_host else NUMPY_DTYPES[device_array(inputs[0]).dtype or ""]
        dtype_id: DType = "fp16" if dtype == np.float16 else "bf16"
        if self._op == "attention":
            (b, h, sq, d), (_, _, skv, _) = shapes[0], shapes[1]
            problem: Problem = AttentionProblem(b, h, sq, skv, d, dtype=dtype_id, causal=causal)
            out_shape: tuple[int, ...] = (b, h, sq, d)
            lse_shape: tuple[int, ...] | None = (b, h, sq)
        else:
            (m, k), (_, n) = shapes
            problem = GemmProblem(m, n, k, dtype=dtype_id)
            out_shape, lse_shape = (m, n), None
        # Buffers this call allocated. Input copies are always freed before returning; the
        # outputs too, unless they are handed to the caller as DeviceOutputs (which free them).
        inputs_owned: list[Any] = []
        outputs_owned: list[Any] = []
        handed_over = False
        try:
            pointers: dict[str, int] = {}
            names = ("q", "k", "v") if self._op == "attention" else ("a", "b")
            for name, array in zip(names, inputs, strict=True):
                if on_host:
                    buffer = device.to_device(array)
                    inputs_owned.append(buffer)
                    pointers[name] = buffer.ptr
                else:
                    pointers[name] = device_array(array).pointer
            out = device.allocate(int(np.prod(out_shape)) * dtype.itemsize)
            outputs_owned.append(out)
            pointers["o" if self._op == "attention" else "c"] = out.ptr
            lse = None
            if lse_shape is not None:
                lse = device.allocate(int(np.prod(lse_shape)) * _LSE_DTYPE.itemsize)
                outputs_owned.append(lse)
                pointers["lse"] = lse.ptr
            params = launch_params(self._family, problem, pointers, scale=scale)
            geometry = self._family.launch_geometry(problem, self.config)
            self._loaded.launch(params, geometry)
            # Before the input copies are freed and the outputs read or handed over.
            self._loaded.device.sync()
            if not on_host:
                lse_out = None if lse is None else DeviceOutput(lse, lse_shape or (), _LSE_DTYPE)
                handed_over = True
                return DeviceOutput(out, out_shape, dtype), lse_out
            result = out.download(out_shape, dtype)
            lse_host = None if lse is None else lse.download(lse_shape or (), _LSE_DTYPE)
            return result, lse_host
        finally:
            # A failed launch must not leak its output buffers either.
            for buffer in inputs_owned + ([] if handed_over else outputs_owned):
                with contextlib.suppress(Exception):  # keep the launch's own error
                    buffer.free()


class CudaBackends:
    """Generic kernels compiled once per problem class, specialized ones from the cache."""

    executes_compiled = True
    compiled_ops = COMPILED_OPS

    def __init__(self, config: RuntimeConfig, *, arch: str) -> None:
        self.device = "cuda"
        self.arch = arch
        self._config = config

    def reference(self, op: str) -> Kernel:
        return DeviceReferenceKernel(op)

    def _build(self, problem: Problem, config: TileConfig, tier: Tier, key: str) -> Kernel:
        from generator import device
        from templates.registry import family_for

        family = family_for(problem, self.arch)
        compiled = compile_for_arch(
            problem, config, self.arch, specialized=tier is Tier.SPECIALIZED
        )
        loaded = device.load(
            compiled.cubin,
            compiled.kernel_name,
            _max_smem_bytes(family, problem, config),
            ptx=compiled.ptx,
        )
        return CudaKernel(
            tier=tier, problem=problem, config=config, kernel_key=key, loaded=loaded, family=family
        )

    def generic(self, problem: Problem) -> Kernel:
        from templates.registry import select

        selection = select(problem, self.arch)
        config = selection.family.default_config(problem, self.arch)
        return self._build(problem, config, Tier.GENERIC, selection.generic_key(problem))

    def forced(self, problem: Problem, config: TileConfig) -> Kernel:
        from templates.registry import generic_key

        return self._build(problem, config, Tier.GENERIC, generic_key(problem, self.arch))

    def specialized(self, problem: Problem) -> Kernel | None:
        loaded = cached_specialized(problem, arch=self.arch, config=self._config)
        if loaded is None or loaded.kernel is None:
            return None
        from templates.registry import family_for

        return CudaKernel(
            family=family_for(problem, self.arch),
            tier=Tier.SPECIALIZED,
            problem=problem,
            config=loaded.config,
            kernel_key=loaded.kernel_key,
            loaded=loaded.kernel,
        )

    def tune(self, problem: Problem) -> None:
        tune_into_cache(problem, arch=self.arch, config=self._config)


def _max_smem_bytes(family: Any, problem: Problem, config: TileConfig) -> int:
    # The generic kernel serves every sequence length of its class; its shared memory
    # depends on the tile only, so the problem it was built from gives the bound.
    return int(family.smem_bytes(problem, config))
