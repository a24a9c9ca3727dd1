"""The real tier backends: NumPy reference, host emulator, CPU-only pre-warming and CUDA."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from runtime.config import RuntimeConfig
from runtime.signature import MAX_SEQLEN, Variant, attention_options
from runtime.specialized import SpecializedKernel, load_specialized
from runtime.tiers import Backends, Kernel, Tier
from runtime.validate_fp8 import is_fp8
from tessera_core.config import ARCH
from tessera_core.errors import CacheMissError, NoDeviceError
from tessera_core.hardware import DEFAULT_ARCH, native_arch
from tessera_core.types import FP8_DTYPE, AttentionDecodeProblem, GemmProblem, Problem, TileConfig

if TYPE_CHECKING:
    from generator.compile import CompiledKernel

# Ops with a kernel template the host and CUDA backends build and run (tiers 2 and 3);
# attention_decode's CUDA launch is runtime.cuda_decode's.
COMPILED_OPS = frozenset({"attention", "attention_bwd", "gemm", "attention_decode"})
HOST_COMPILED_OPS = COMPILED_OPS


class ReferenceKernel:
    """Tier 1: the family's NumPy reference (bounded memory, fp32 accumulation)."""

    tier = Tier.REFERENCE
    kernel_key: str | None = None
    config: TileConfig | None = None

    def __init__(self, op: str, layout: str = "nn") -> None:
        self.op = op
        self.layout = layout  # gemm only: which operand is stored transposed

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Variant = ()
    ) -> tuple[Any, Any]:
        if self.op == "attention" and dict(variant).get("varlen"):
            from templates.attention.reference import attention_varlen_reference

            q, k, v, cu_q, cu_k = inputs[:5]
            options = attention_options(variant)
            o, lse = attention_varlen_reference(
                q, k, v, cu_q, cu_k, causal=causal, scale=scale,
                window_size=options["window_size"], softcap=options["softcap"],
                alibi_slopes=inputs[5] if len(inputs) > 5 else None,
                max_seqlen_k=dict(variant)[MAX_SEQLEN][1],
            )  # fmt: skip
            return np.asarray(o).astype(q.dtype, copy=False), lse
        if self.op == "attention" and is_fp8(inputs[0]):
            return fp8_reference(inputs, causal=causal, scale=scale)
        if self.op == "attention":
            from templates.attention.reference import attention_reference

            q, k, v = inputs[:3]
            slopes = inputs[3] if len(inputs) > 3 else None
            o, lse = attention_reference(
                q, k, v, causal=causal, scale=scale, alibi_slopes=slopes,
                **attention_options(variant),
            )  # fmt: skip
            return np.asarray(o).astype(q.dtype, copy=False), lse
        if self.op == "attention_decode":
            from templates.attention_decode.reference import attention_decode_reference

            q, k_cache, v_cache, k, v, lengths, table, slopes, options = inputs
            o, lse = attention_decode_reference(
                q, k_cache, v_cache, cache_seqlens=lengths, k=k, v=v, block_table=table,
                causal=causal, scale=scale, window_size=options.window_size,
                softcap=options.softcap, alibi_slopes=slopes,
            )  # fmt: skip
            return o.astype(q.dtype), lse.astype(np.float32)
        if self.op == "attention_bwd":
            from templates.attention_bwd.reference import attention_bwd_reference

            q, k, v, o, lse, do = inputs[:6]
            grads = attention_bwd_reference(
                q, k, v, o, lse, do, causal=causal, scale=scale,
                alibi_slopes=inputs[6] if len(inputs) > 6 else None, **attention_options(variant),
            )  # fmt: skip
            return tuple(g.astype(q.dtype, copy=False) for g in grads), None
        from templates.gemm.reference import gemm_reference

        a, b = inputs
        a_op = a.T if self.layout[0] == "t" else a
        b_op = b.T if self.layout[1] == "t" else b
        return np.asarray(gemm_reference(a_op, b_op)).astype(a.dtype, copy=False), None


def fp8_reference(inputs: tuple[Any, ...], *, causal: bool, scale: float | None) -> tuple[Any, Any]:
    """Tier 1 of e4m3 attention: the reference on the dequantized q, k, v; O in bf16."""
    from templates.attention.reference import attention_reference
    from templates.attention_sm90.fp8 import dequantize

    q, k, v, descale = inputs
    values = [
        dequantize(np.ascontiguousarray(x).view(np.uint8), factor).astype(np.float32)
        for x, factor in zip((q, k, v), descale, strict=True)
    ]
    o, lse = attention_reference(*values, causal=causal, scale=scale)
    return np.asarray(o).astype(ml_dtypes.bfloat16), lse


class EmulatedKernel:
    """Tiers 2 and 3 on the host emulator: the real kernel source, run on the CPU."""

    def __init__(
        self, *, tier: Tier, problem: Problem, config: TileConfig, kernel_key: str, arch: str
    ) -> None:
        self.tier = tier
        self.problem = problem
        self.arch = arch
        self.config: TileConfig | None = config
        self.kernel_key: str | None = kernel_key
        self._specialized = tier is Tier.SPECIALIZED

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Variant = ()
    ) -> tuple[Any, Any]:
        from generator import emulate_backward, emulator

        config = self.config.to_dict() if self.config is not None else None
        if self.problem.op == "attention" and dict(variant).get("varlen"):
            options = attention_options(variant)
            max_q, max_k = dict(variant)[MAX_SEQLEN]
            return emulator.run_attention_varlen(
                *inputs[:3], cu_seqlens_q=inputs[3], cu_seqlens_k=inputs[4], max_seqlen_q=max_q,
                max_seqlen_k=max_k, causal=causal, scale=scale,
                window_size=options["window_size"], softcap=options["softcap"],
                alibi_slopes=inputs[5] if len(inputs) > 5 else None, config=config,
                specialized=self._specialized, arch=self.arch,
            )  # fmt: skip
        if self.problem.op == "attention" and self.problem.dtype == FP8_DTYPE:
            from generator.emulate_attention_fp8 import run_attention_fp8

            q, k, v, descale = inputs
            return run_attention_fp8(
                q, k, v, descale=descale, causal=causal, scale=scale, config=config,
                specialized=self._specialized, arch=self.arch,
            )  # fmt: skip
        if self.problem.op == "attention":
            q, k, v = inputs[:3]
            return emulator.run_attention(
                q,
                k,
                v,
                causal=causal,
                scale=scale,
                config=config,
                specialized=self._specialized,
                arch=self.arch,
                alibi_slopes=inputs[3] if len(inputs) > 3 else None,
                **attention_options(variant),
            )
        if self.problem.op == "attention_decode":
            return self._run_decode(inputs, causal=causal, scale=scale)
        if self.problem.op == "attention_bwd":
            q, k, v, o, lse, do = inputs[:6]
            grads = emulate_backward.run_attention_backward(
                q, k, v, o, lse, do, causal=causal, scale=scale, config=config,
                specialized=self._specialized, arch=self.arch,
                alibi_slopes=inputs[6] if len(inputs) > 6 else None, **attention_options(variant),
            )  # fmt: skip
            return grads, None
        a, b = inputs
        assert isinstance(self.problem, GemmProblem)
        layout = self.problem.layout
        return emulator.run_gemm(
            a, b, layout=layout, config=config, specialized=self._specialized, arch=self.arch
        ), None

    def _run_decode(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None
    ) -> tuple[Any, Any]:
        """The decode kernel on copies of the caches; the appended rows are copied back into
        the caller's caches only once the run has succeeded (a failure that falls back to
        tier 1 must not append twice). The problem is this call's: one generic kernel serves
        every shape of its key, so the problem it was built for is only the first of them."""
        from generator.emulate_decode import decode_problem, run_attention_decode_problem

        q, k_cache, v_cache, k, v, lengths, table, slopes, options = inputs
        tensors = {"q": q, "k_cache": k_cache, "v_cache": v_cache, "k": k, "v": v,
                   "alibi_slopes": slopes}  # fmt: skip
        seq_new = 0 if k is None else int(k.shape[1])
        problem = decode_problem(
            q, k_cache, cache_seqlens=lengths, seq_new=seq_new, paged=table is not None,
            causal=causal, alibi_slopes=slopes,
        )  # fmt: skip
        result = run_attention_decode_problem(
            problem,
            {**tensors, "cache_seqlens": lengths, "block_table": table},
            scale=scale,
            window_size=options.window_size,
            softcap=options.softcap,
            num_splits=options.num_splits,
            config=splits_for(problem, self.config, self.arch),
            specialized=self._specialized,
            arch=self.arch,
        )
        k_cache[...] = result.k_cache
        v_cache[...] = result.v_cache
        return result.o, result.lse


def splits_for(
    problem: AttentionDecodeProblem, config: TileConfig | None, arch: str
) -> TileConfig | None:
    """`config`, or its tiles with the heuristic split count of this call's problem where its
    own count would leave splits without keys (a generic kernel's configuration was chosen for
    the first problem of its key; the split count is a run-time value of the same binary)."""
    from templates.attention_decode import space as decode_space

    if config is None:
        return None
    tiles = -(-problem.seq_kv // config.block_n)
    if decode_space.num_splits(config) <= tiles:
        return config
    splits = decode_space.heuristic_splits(problem, config, arch)
    options = {**dict(config.options), decode_space.NUM_SPLITS: splits}
    return dataclasses.replace(config, options=tuple(options.items()))


class PrewarmedKernel:
    """A kernel built (and cached) for the target arch that this machine does not execute."""

    def __init__(self, *, tier: Tier, config: TileConfig, kernel_key: str) -> None:
        self.tier = tier
        self.config: TileConfig | None = config
        self.kernel_key: str | None = kernel_key

    def run(
        self, inputs: tuple[Any, ...], *, causal: bool, scale: float | None, variant: Variant = ()
    ) -> tuple[Any, Any]:
        raise NoDeviceError(f"{self.kernel_key} was built for a GPU; device='cpu' runs tier 1 only")


class HostBackends:
    """device='emulator' (tiers 2 and 3 on the host emulator) or 'cpu' (tier 1 only, while
    generic kernels are still compiled with NVRTC and hot shapes tuned: a cache to ship)."""

    def __init__(self, config: RuntimeConfig, *, device: str, arch: str) -> None:
        self.device = device
        self.arch = arch
        self.executes_compiled = device == "emulator"
        self.compiled_ops = HOST_COMPILED_OPS
        self._config = config

    def reference(self, op: str, layout: str = "nn") -> Kernel:
        return ReferenceKernel(op, layout)

    def generic(self, problem: Problem) -> Kernel:
        from templates.registry import select

        selection = select(problem, self.arch)
        config = selection.family.default_config(problem, self.arch)
        key = selection.generic_key(problem)
        if not self.executes_compiled:
            compile_for_arch(problem, config, self.arch, specialized=False)
            return PrewarmedKernel(tier=Tier.GENERIC, config=config, kernel_key=key)
        return EmulatedKernel(
            tier=Tier.GENERIC, problem=problem, config=config, kernel_key=key, arch=self.arch
        )

    def forced(self, problem: Problem, config: TileConfig) -> Kernel:
        if not self.executes_compiled:
            raise ValueError(
                "config= runs a compiled kernel; device='cpu' executes tier 1 only: "
                "use device='emulator' or 'cuda'"
            )
        from templates.registry import generic_key

        key = generic_key(problem, self.arch)
        return EmulatedKernel(
            tier=Tier.GENERIC, problem=problem, config=config, kernel_key=key, arch=self.arch
        )

    def specialized(self, problem: Problem) -> Kernel | None:
        loaded = cached_specialized(problem, arch=self.arch, config=self._config)
        if loaded is None:
            return None
        key = loaded.kernel_key
        if not self.executes_compiled:
            return PrewarmedKernel(tier=Tier.SPECIALIZED, config=loaded.config, kernel_key=key)
        return EmulatedKernel(
            tier=Tier.SPECIALIZED,
            problem=problem,
            config=loaded.config,
            kernel_key=key,
            arch=self.arch,
        )

    def tune(self, problem: Problem) -> None:
        tune_into_cache(problem, arch=self.arch, config=self._config)


def cached_specialized(
    problem: Problem, *, arch: str, config: RuntimeConfig
) -> SpecializedKernel | None:
    """The tuned kernel of exactly `problem` for `arch` in the runtime's cache, else None."""
    from templates.registry import kernel_key

    try:
        return load_specialized(kernel_key(problem, arch), cache_dirs=config.cache_dirs)
    except CacheMissError:
        return None


def tune_into_cache(problem: Problem, *, arch: str, config: RuntimeConfig) -> str:
    """Tune `problem` and store its winner in the writable cache (autotune.job, as the
    `generator.tune` CLI does); returns the kernel key. The objective is measured on a GPU
    of `arch`, else modelled."""
    from autotune.job import TuneRequest, run

    cache_dir = config.cache_dirs[0] if config.cache_dirs else None
    result = run(
        TuneRequest(
            problem=problem,
            arch=arch,
            trials=config.tuning_trials,
            timeout_s=config.tuning_timeout_s or None,
            seed=config.tuning_seed,
            jobs=1,
            cache_dir=cache_dir,
            progress=False,
        )
    )
    return result.kernel_key


def compile_for_arch(
    problem: Problem, config: TileConfig, arch: str, *, specialized: bool
) -> CompiledKernel:
    """NVRTC-compile the kernel of the family serving `problem` on `arch` (no GPU needed); the
    compile cache keeps it."""
    from generator.compile import compile_kernel
    from generator.render import render
    from templates.registry import family_for

    rendered = render(
        family_for(problem, arch), problem, config, specialized=specialized, arch=arch
    )
    return compile_kernel(rendered, arch=arch)


def resolve_device(config: RuntimeConfig) -> tuple[str, str]:
    """(device, arch): 'auto' is 'cuda' with a usable GPU, else 'cpu'. The arch is
    config.arch, else the GPU's native target (an sm_90 device: sm_90a, the Hopper families),
    else TESSERA_ARCH, else sm_90."""
    from generator.gpu import probe

    gpu = probe()
    device = config.device
    if device == "auto":
        device = "cuda" if gpu.available else "cpu"
    if device == "cuda" and not gpu.available:
        raise NoDeviceError(
            f"device='cuda' but no usable GPU ({gpu.reason}); use device='emulator' or 'cpu'"
        )
    device_arch = native_arch(gpu.arch) if device == "cuda" and gpu.arch else None
    arch = config.arch or device_arch or ARCH.get() or DEFAULT_ARCH
    return device, arch


def make_backends(config: RuntimeConfig) -> Backends:
    device, arch = resolve_device(config)
    if device == "cuda":
        from runtime.cuda_backend import CudaBackends

        return CudaBackends(config, arch=arch)
    return HostBackends(config, device=device, arch=arch)
