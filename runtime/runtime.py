"""Runtime: the one object users call; it validates, dispatches through the tiers and reports."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from autotune.hotspots import Hotspot, TraceRecord, rank
from runtime.config import Device, RuntimeConfig
from runtime.dispatcher import Dispatcher
from runtime.signature import Signature, SignatureKey
from runtime.stats import RuntimeStats
from runtime.tiers import Backends
from runtime.validate import attention_key, gemm_key, tile_config
from runtime.validate_backward import attention_backward_key
from runtime.validate_decode import decode_call
from runtime.validate_fp8 import attention_fp8_key, descale_factors, is_fp8
from tessera_core.types import TileConfig


class Runtime:
    """Attention and GEMM through tiers 1-3, with tracing, statistics and background tuning.

    `Runtime(device="emulator")` is shorthand for `Runtime(config=RuntimeConfig(device=...))`;
    `backends` replaces the device backends (tests inject fakes), and `clock_ns` the monotonic
    nanosecond clock that times each kernel run (tests inject a fake one to drive promotion by
    cumulative time). Use it as a context manager,
    or call `close()`, to flush the trace and stop the tuning workers.

    Several threads may call one Runtime: its bookkeeping is guarded by a lock and kernels
    run outside it (the tuning workers are its own threads).
    """

    def __init__(
        self,
        *,
        config: RuntimeConfig | None = None,
        device: Device | None = None,
        backends: Backends | None = None,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        config = config or RuntimeConfig()
        if device is not None:
            config = dataclasses.replace(config, device=device)
        if backends is None:
            from runtime.backends import make_backends

            backends = make_backends(config)
        self.config = config
        self._dispatcher = Dispatcher(config, backends, clock_ns=clock_ns)
        self._host_only = backends.device != "cuda"

    @property
    def device(self) -> str:
        return self._dispatcher.backends.device

    @property
    def arch(self) -> str:
        return self._dispatcher.backends.arch

    def attention(
        self,
        q: Any,
        k: Any,
        v: Any,
        causal: bool = False,
        scale: float | None = None,
        *,
        config: Mapping[str, int] | TileConfig | None = None,
        return_lse: bool = False,
        window_size: tuple[int, int] = (-1, -1),
        softcap: float = 0.0,
        alibi_slopes: Any = None,
        layout: str = "bhsd",
        descale: tuple[float, float, float] | None = None,
    ) -> Any:
        """softmax(q kᵀ · scale) v over [batch, heads, seq, head_dim] arrays (fp16, bf16, or
        FP8 e4m3: ml_dtypes.float8_e4m3fn NumPy arrays at head_dim 128, plain or causal).

        The variants are FlashAttention-2's: k and v may have fewer heads than q, a divisor of
        them (GQA/MQA: query head h reads KV head h // (heads // heads_kv)); head_dim is any
        multiple of 8 up to 256.

        Args:
            scale: None means 1/sqrt(head_dim).
            window_size: (left, right) sliding window: row i sees keys j with
                i + off - left <= j <= i + off + right, off = seq_kv - seq_q (bottom-right
                aligned); -1 leaves a side unbounded; combined with `causal`.
            softcap: > 0 caps the scaled scores s as softcap * tanh(s / softcap) (Gemma-2).
            alibi_slopes: float32 [heads] or [batch, heads]: scores gain
                -slope * |i + off - j| (FA2's ALiBi).
            layout: "bhsd" ([batch, heads, seq, head_dim]) or "bshd" ([batch, seq, heads,
                head_dim], FlashAttention's) for q, k, v and the output; lse stays
                [batch, heads, seq_q].
            config: force this tile configuration (a dict of TileConfig fields) on the
                generic kernel; InvalidConfigError (a ValueError) says why one is invalid.
            return_lse: also return the log-sum-exp of each query row, float32
                [batch, heads, seq_q] (natural log, of the scaled scores).
            descale: e4m3 inputs only: (dq, dk, dv), the per-tensor factors the e4m3 values
                of q, k and v stand for (None: 1.0 each); they are run-time values, not part
                of the signature. V's transpose, which the FP8 kernel reads, is built here.

        Returns:
            O in the input dtype (bf16 for e4m3 inputs), or (O, lse) with `return_lse`.
        """
        inputs: tuple[Any, ...]
        if is_fp8(q):  # attention_sm90 on sm_90a; tier 1 dequantizes
            plain = window_size == (-1, -1) and softcap == 0.0 and alibi_slopes is None
            key = attention_fp8_key(q, k, v, causal, scale, plain=plain, layout=layout)
            inputs = (q, k, v, descale_factors(descale))
        elif descale is not None:
            raise ValueError(
                f"descale={descale!r}: only for e4m3 (ml_dtypes.float8_e4m3fn) q, k, v; "
                "leave it None for fp16 and bf16"
            )
        else:
            key = attention_key(
                q, k, v, causal, scale, window_size=window_size, softcap=softcap,
                alibi_slopes=alibi_slopes, layout=layout,
            )  # fmt: skip
            inputs = (q, k, v) if alibi_slopes is None else (q, k, v, alibi_slopes)
        if self._host_only and not isinstance(q, np.ndarray):
            raise ValueError(_HOST_ONLY.format(name="q, k, v", device=self.device))
        if return_lse is not False and return_lse is not True:
            raise ValueError(f"return_lse={return_lse!r}: expected a bool")
        forced = None if config is None else self._forced(config, key)
        out, lse = self._dispatcher.call(key, inputs, forced)
        return (out, lse) if return_lse else out

    def attention_varlen(
        self,
        q: Any,
        k: Any,
        v: Any,
        *,
        cu_seqlens_q: Any,
        cu_seqlens_k: Any,
        max_seqlen_q: int,
        max_seqlen_k: int,
        causal: bool = False,
        scale: float | None = None,
        window_size: tuple[int, int] = (-1, -1),
        softcap: float = 0.0,
        alibi_slopes: Any = None,
        return_lse: bool = False,
        config: Mapping[str, int] | TileConfig | None = None,
    ) -> Any:
        """Attention over packed variable-length sequences, FlashAttention-2's
        flash_attn_varlen_func convention: q [total_q, heads, head_dim], k and v [total_k,
        heads_kv, head_dim], sequence b the rows cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1
        (int32 [batch + 1] prefix sums; keys likewise); no padding work.

        Each sequence is its own problem (causal and windows aligned to its own lengths;
        ALiBi slopes [heads] or [batch, heads]). A signature is (batch, max lengths, ...); the
        tuned kernel's key names the length bucket (next power of two), so one tuned kernel
        serves every length distribution of its bucket.

        Returns:
            O [total_q, heads, head_dim] in q's dtype, or (O, lse float32 [heads, total_q])
            with `return_lse`.
        """
        from runtime.validate_varlen import attention_varlen_key

        key = attention_varlen_key(
            q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
            max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, causal=causal, scale=scale,
            window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes,
        )  # fmt: skip
        if self._host_only and not isinstance(q, np.ndarray):
            raise ValueError(_HOST_ONLY.format(name="q, k, v", device=self.device))
        if return_lse is not False and return_lse is not True:
            raise ValueError(f"return_lse={return_lse!r}: expected a bool")
        forced = None if config is None else self._forced(config, key)
        inputs = (q, k, v, cu_seqlens_q, cu_seqlens_k)
        inputs += () if alibi_slopes is None else (alibi_slopes,)
        out, lse = self._dispatcher.call(key, inputs, forced)
        return (out, lse) if return_lse else out

    def attention_backward(
        self,
        q: Any,
        k: Any,
        v: Any,
        o: Any,
        lse: Any,
        do: Any,
        *,
        causal: bool = False,
        scale: float | None = None,
        window_size: tuple[int, int] = (-1, -1),
        softcap: float = 0.0,
        alibi_slopes: Any = None,
        layout: str = "bhsd",
    ) -> tuple[Any, Any, Any]:
        """(dq, dk, dv) of `attention` given its output o, its log-sum-exp and the gradient do.

        FlashAttention-2's backward: P is recomputed from q, k and lse, so the forward's
        `return_lse=True` output is all it needs. Dispatched as signature op "attention_bwd"
        through the tiers like the forward: its NumPy reference, the generic kernel
        (kernel key `attention_bwd.<dtype>.d<head_dim>.<mask>.<arch>.generic`), then the tuned
        one (`attention_bwd.<dtype>.b.h.sq.skv.d.<mask>.<arch>`), traced and counted. The
        variants, as given to the forward, are part of the signature and the kernel keys.

        Args:
            o, do: like q, in q's layout and dtype.
            lse: float32 [batch, heads, seq_q], -inf for rows that saw no key.
            causal, scale, window_size, softcap, alibi_slopes, layout: as given to the
                forward.

        Returns:
            (dq like q, dk like k, dv like v) in the inputs' dtype: with GQA/MQA dk and dv have
            k's heads, each the sum over its query heads; rows that saw no key get zero
            gradients. On device='cuda' with device-array inputs, a compiled tier's dq is the
            kernel's float32 accumulator (a DeviceOutput; round it on the device, as
            runtime.torch does).
        """
        key = attention_backward_key(
            q, k, v, o, lse, do, causal, scale, window_size=window_size, softcap=softcap,
            alibi_slopes=alibi_slopes, layout=layout,
        )  # fmt: skip
        if self._host_only and not isinstance(q, np.ndarray):
            raise ValueError(_HOST_ONLY.format(name="q, k, v, o, lse, do", device=self.device))
        inputs = (q, k, v, o, lse, do) + (() if alibi_slopes is None else (alibi_slopes,))
        grads, _ = self._dispatcher.call(key, inputs)
        dq, dk, dv = grads
        return dq, dk, dv

    def attention_with_kvcache(
        self,
        q: Any,
        k_cache: Any,
        v_cache: Any,
        *,
        k: Any = None,
        v: Any = None,
        cache_seqlens: Any,
        block_table: Any = None,
        causal: bool = False,
        scale: float | None = None,
        window_size: tuple[int, int] = (-1, -1),
        softcap: float = 0.0,
        num_splits: int = 0,
        alibi_slopes: Any = None,
        config: Mapping[str, int] | TileConfig | None = None,
        return_lse: bool = False,
    ) -> Any:
        """Decoding against a KV cache, in flash_attn_with_kvcache's convention.

        q [batch, seq_q, heads_q, d]; k_cache, v_cache [num_pages, page_size, heads_kv, d]
        with block_table int32 [batch, max_pages], or [batch, capacity, heads_kv, d] without;
        cache_seqlens int32 [batch] (or an int); k, v [batch, seq_new, heads_kv, d] are written
        into the caches at cache_seqlens (in place) before attending. heads_q is a multiple of
        heads_kv (GQA/MQA); causal and window_size (left, right; -1 unbounded) are bottom-right
        aligned; softcap > 0 caps scores with softcap * tanh(score / softcap); alibi_slopes,
        float32 [heads_q] or [batch, heads_q], add -slope * |s + seqlen_k - seq_q - j| with each
        sequence's own seqlen_k = cache_seqlens[b] + seq_new (FA2's ALiBi). Pages may hold
        any multiple of 16 keys (FlashAttention-2 requires multiples of 256).

        Args:
            num_splits: KV splits of the flash-decoding pass; 0 takes the tuned (tier 3) or
                heuristic (tier 2) count. It never changes the kernel binary.
            config: force this tile configuration on the generic kernel.
            return_lse: also return the log-sum-exp, float32 [batch, heads_q, seq_q].

        Returns:
            O [batch, seq_q, heads_q, d] in q's dtype, or (O, lse) with `return_lse`. On
            device='cuda' every array may instead be a CUDA array (the caches are appended in
            place on the device, O and lse come back as DeviceOutputs; cache_seqlens and
            block_table are read back to pick the kernel).
        """
        call = decode_call(
            q, k_cache, v_cache, k=k, v=v, cache_seqlens=cache_seqlens, block_table=block_table,
            causal=causal, scale=scale, window_size=window_size, softcap=softcap,
            num_splits=num_splits, alibi_slopes=alibi_slopes,
        )  # fmt: skip
        if self._host_only and not isinstance(q, np.ndarray):
            raise ValueError(_HOST_ONLY.format(name="q, k_cache, v_cache", device=self.device))
        if return_lse is not False and return_lse is not True:
            raise ValueError(f"return_lse={return_lse!r}: expected a bool")
        forced = None if config is None else self._forced(config, call.key)
        out, lse = self._dispatcher.call(call.key, call.inputs, forced)
        return (out, lse) if return_lse else out

    def gemm(
        self,
        a: Any,
        b: Any,
        *,
        layout: str = "nn",
        config: Mapping[str, int] | TileConfig | None = None,
    ) -> Any:
        """op(A) @ op(B) (fp16 or bf16), fp32 accumulation, [M, N] in the input dtype.

        Args:
            layout: how a and b are stored, BLAS style: "nn" a [M, K], b [K, N]; "nt" b [N, K]
                (A @ Bᵀ); "tn" a [K, M] (Aᵀ @ B); "tt" both. A compile-time choice of the
                kernel, so transposed operands are never copied; it is part of the signature
                and of the kernel key (gemm.<dtype>.<layout>.m..., NN's key has none).
        """
        key = gemm_key(a, b, layout)
        if self._host_only and not isinstance(a, np.ndarray):
            raise ValueError(_HOST_ONLY.format(name="a, b", device=self.device))
        forced = None if config is None else self._forced(config, key)
        out, _ = self._dispatcher.call(key, (a, b), forced)
        return out

    def _forced(self, config: Mapping[str, int] | TileConfig, key: SignatureKey) -> TileConfig:
        """A call's `config=`, checked against its problem (InvalidConfigError if invalid)."""
        return tile_config(config, Signature.from_key(key).problem(), self.arch)

    def stats(self) -> RuntimeStats:
        return self._dispatcher.stats()

    def history(self) -> list[TraceRecord]:
        """The in-memory trace (calls, promotions, demotions, tuning events), oldest first."""
        return self._dispatcher.tracer.history()

    def hotspots(self) -> list[Hotspot]:
        """This runtime's hottest signatures under RuntimeConfig's hotspot criteria."""
        return rank(
            self.history(),
            min_count=self.config.hotspot_min_count,
            min_time_ms=self.config.hotspot_min_time_ms,
        )

    def wait_for_tuning(self, timeout_s: float | None = None) -> bool:
        """Block until no tuning job is queued or running; False on timeout."""
        return self._dispatcher.wait_for_tuning(timeout_s)

    def flush(self) -> None:
        self._dispatcher.tracer.flush()

    def close(self) -> None:
        self._dispatcher.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_HOST_ONLY = (
    "{name} are CUDA device arrays but this runtime's device is {device!r}: "
    "use Runtime(device='cuda') or pass NumPy arrays"
)
