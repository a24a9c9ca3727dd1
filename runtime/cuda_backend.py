"""device='cuda': tiers 2 and 3 launch on the GPU; NumPy inputs are copied, device arrays are not
(attention_with_kvcache: runtime.cuda_decode).

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
from runtime.signature import MAX_SEQLEN, Variant, problem_fields
from runtime.tiers import Kernel, Tier
from runtime.validate_fp8 import is_fp8
from templates.attention_bwd.space import deterministic
from templates.family import Family, launch_params
from tessera_core.types import (
    AttentionBackwardProblem,
    AttentionProblem,
    DType,
    GemmLayout,
    GemmProblem,
    Problem,
    TileConfig,
)

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

    def __init__(self, op: str, layout: str = "nn") -> None:
        self._host = ReferenceKernel(op, layout)

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Variant = ()
    ) -> tuple[Any, Any]:
        if isinstance(inputs[0], np.ndarray):
            return self._host.run(inputs, causal=causal, scale=scale, variant=variant)
        if self._host.op == "attention_decode":  # the caches are appended on the device
            from runtime.cuda_decode import reference_on_device

            return reference_on_device(inputs, causal=causal, scale=scale)
        host_inputs = tuple(to_host(x) for x in inputs)
        out, lse = self._host.run(host_inputs, causal=causal, scale=scale, variant=variant)
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
        self._layout: GemmLayout = getattr(problem, "layout", "nn")  # a gemm kernel: one layout

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Variant = ()
    ) -> tuple[Any, Any]:
        from generator import device

        assert self.config is not None
        if self._op == "attention" and is_fp8(inputs[0]):
            raise NotImplementedError(
                "e4m3 attention on device='cuda': V's permuted transpose is built on the host "
                "only so far; use device='emulator' (tier 1 serves this call)"
            )
        on_host = isinstance(inputs[0], np.ndarray)
        shapes = [x.shape if on_host else device_array(x).shape for x in inputs]
        dtype = inputs[0].dtype if on_host else NUMPY_DTYPES[device_array(inputs[0]).dtype or ""]
        io = _launch_io(self._op, shapes, dtype, causal, self._layout, variant)
        # Buffers this call allocated. Input copies are always freed before returning; the
        # outputs too, unless they are handed to the caller as DeviceOutputs (which free them).
        inputs_owned: list[Any] = []
        outputs_owned: list[Any] = []
        handed_over = False
        try:
            pointers: dict[str, int] = {}
            for name, array in zip(io.inputs, inputs, strict=True):
                if on_host:
                    buffer = device.to_device(np.ascontiguousarray(array))
                    inputs_owned.append(buffer)
                    pointers[name] = buffer.ptr
                else:
                    pointers[name] = device_array(array).pointer
            buffers = {}
            for name, (shape, out_dtype) in io.outputs.items():
                buffers[name] = device.allocate(int(np.prod(shape)) * out_dtype.itemsize)
                outputs_owned.append(buffers[name])
                pointers[name] = buffers[name].ptr
            if self._op == "attention_bwd" and not deterministic(self.config):
                buffers["dq"].zero()  # the kernel adds into dQ with fp32 atomics
            params = launch_params(self._family, io.problem, pointers, scale=scale)
            geometry = self._family.launch_geometry(io.problem, self.config)
            self._loaded.launch(params, geometry)
            # Before the input copies are freed and the outputs read or handed over.
            self._loaded.device.sync()
            outs: list[Any]
            if not on_host:
                handed_over = True
                outs = [DeviceOutput(buffers[n], *io.outputs[n]) for n in io.outputs]
            else:
                outs = [buffers[n].download(*io.outputs[n]) for n in io.outputs]
            return io.result(outs, dtype)
        finally:
            # A failed launch must not leak its output buffers either.
            for buffer in inputs_owned + ([] if handed_over else outputs_owned):
                with contextlib.suppress(Exception):  # keep the launch's own error
                    buffer.free()


@dataclass(frozen=True)
class _LaunchIO:
    """One op's launch: its problem, the Params names of its inputs (in call order) and its
    outputs (shape, dtype), in the order `result` takes them."""

    op: str
    problem: Problem
    inputs: tuple[str, ...]
    outputs: dict[str, tuple[tuple[int, ...], np.dtype]]

    def result(self, outs: list[Any], dtype: np.dtype) -> tuple[Any, Any]:
        """The kernel run's (output, lse or None) from its outputs; attention_bwd's dQ
        (fp32 accumulator) is rounded to `dtype` on the host, and left fp32 on the device
        (DeviceOutput: the caller rounds it there, as runtime.torch does)."""
        if self.op == "attention":
            return outs[0], outs[1]
        if self.op == "attention_bwd":
            dq, dk, dv = outs
            if isinstance(dq, np.ndarray):
                dq = dq.astype(dtype)
            return (dq, dk, dv), None
        return outs[0], None


def _launch_io(
    op: str,
    shapes: list[tuple[int, ...]],
    dtype: np.dtype,
    causal: bool,
    layout: GemmLayout,
    variant: Variant = (),
) -> _LaunchIO:
    dtype_id: DType = "fp16" if dtype == np.float16 else "bf16"
    if op == "attention":
        return _attention_io(shapes, dtype, dtype_id, causal, variant)
    if op == "attention_bwd":
        return _attention_bwd_io(shapes, dtype, dtype_id, causal, variant)
    m, k = shapes[0][::-1] if layout[0] == "t" else shapes[0]
    n = shapes[1][0] if layout[1] == "t" else shapes[1][1]
    problem = GemmProblem(m, n, k, dtype=dtype_id, layout=layout)
    return _LaunchIO(op, problem, ("a", "b"), {"c": ((m, n), dtype)})


def _attention_io(
    shapes: list[tuple[int, ...]], dtype: np.dtype, dtype_id: DType, causal: bool, variant: Variant
) -> _LaunchIO:
    """The forward's problem, inputs and outputs, with its variants: GQA (k's heads), bshd,
    varlen (packed [total, heads, d] with cu_seqlens), ALiBi (a trailing slopes input)."""
    from templates.attention.family import tensor_shapes

    fields = problem_fields(variant)
    names: tuple[str, ...] = ("q", "k", "v")
    totals = None
    if fields.get("varlen"):  # packed [total, heads, d]; lengths in cu_seqlens
        (total_q, h, d), total_k = shapes[0], shapes[1][0]
        b, (sq, skv) = shapes[3][0] - 1, dict(variant)[MAX_SEQLEN]
        totals = (total_q, total_k)
        names += ("cu_seqlens_q", "cu_seqlens_k")
    else:
        seq_axis, head_axis = (1, 2) if fields.get("layout") == "bshd" else (2, 1)
        b, h, sq, d = shapes[0][0], shapes[0][head_axis], shapes[0][seq_axis], shapes[0][3]
        skv = shapes[1][seq_axis]
    names += ("alibi_slopes",) if len(shapes) == len(names) + 1 else ()
    problem = AttentionProblem(b, h, sq, skv, d, dtype=dtype_id, causal=causal, **fields)
    lse_shape = tensor_shapes(problem, totals=totals)["lse"]
    outputs = {"o": (tuple(shapes[0]), dtype), "lse": (lse_shape, _LSE_DTYPE)}
    return _LaunchIO("attention", problem, names, outputs)


def _attention_bwd_io(
    shapes: list[tuple[int, ...]], dtype: np.dtype, dtype_id: DType, causal: bool, variant: Variant
) -> _LaunchIO:
    """The backward's problem, inputs (q, k, v, o, lse, dO[, alibi_slopes]) and outputs: dQ
    (fp32) in q's shape, dK and dV in k's (GQA: k's heads), either layout."""
    fields = problem_fields(variant)
    seq_axis, head_axis = (1, 2) if fields.get("layout") == "bshd" else (2, 1)
    q_shape, k_shape = tuple(shapes[0]), tuple(shapes[1])
    b, h, sq, d = q_shape[0], q_shape[head_axis], q_shape[seq_axis], q_shape[3]
    problem = AttentionBackwardProblem(
        b, h, sq, k_shape[seq_axis], d, dtype=dtype_id, causal=causal, **fields
    )
    names: tuple[str, ...] = ("q", "k", "v", "o", "lse", "dout")
    names += ("alibi_slopes",) if len(shapes) == len(names) + 1 else ()
    outputs: dict[str, tuple[tuple[int, ...], np.dtype]] = {
        "dq": (q_shape, _LSE_DTYPE),  # fp32
        "dk": (k_shape, dtype),
        "dv": (k_shape, dtype),
    }
    return _LaunchIO("attention_bwd", problem, names, outputs)


class CudaBackends:
    """Generic kernels compiled once per problem class, specialized ones from the cache."""

    executes_compiled = True
    compiled_ops = COMPILED_OPS

    def __init__(self, config: RuntimeConfig, *, arch: str) -> None:
        self.device = "cuda"
        self.arch = arch
        self._config = config

    def reference(self, op: str, layout: str = "nn") -> Kernel:
        return DeviceReferenceKernel(op, layout)

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
        if problem.op == "attention_decode":
            return self._decode(tier=tier, config=config, key=key, loaded=loaded, family=family)
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

        family = family_for(problem, self.arch)
        if problem.op == "attention_decode":
            return self._decode(
                tier=Tier.SPECIALIZED, config=loaded.config, key=loaded.kernel_key,
                loaded=loaded.kernel, family=family,
            )  # fmt: skip
        return CudaKernel(
            family=family,
            tier=Tier.SPECIALIZED,
            problem=problem,
            config=loaded.config,
            kernel_key=loaded.kernel_key,
            loaded=loaded.kernel,
        )

    def tune(self, problem: Problem) -> None:
        tune_into_cache(problem, arch=self.arch, config=self._config)

    def _decode(
        self, *, tier: Tier, config: TileConfig, key: str, loaded: Any, family: Family
    ) -> Kernel:
        from runtime.cuda_decode import CudaDecodeKernel

        return CudaDecodeKernel(
            tier=tier, config=config, kernel_key=key, loaded=loaded, family=family, arch=self.arch
        )


def _max_smem_bytes(family: Any, problem: Problem, config: TileConfig) -> int:
    # The generic kernel serves every sequence length of its class; its shared memory
    # depends on the tile only, so the problem it was built from gives the bound.
    return int(family.smem_bytes(problem, config))
