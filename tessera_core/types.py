"""The value types every package shares: dtypes, tile configurations and problem descriptions."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import KW_ONLY, asdict, dataclass
from typing import Any, ClassVar, Literal

from tessera_core.hardware import WARP_SIZE

DType = Literal["fp16", "bf16", "e4m3"]
DTYPES: tuple[DType, ...] = ("fp16", "bf16")  # the 16-bit dtypes every family serves
DTYPE_BYTES = 2  # of DTYPES
# FP8 e4m3 inputs (ml_dtypes.float8_e4m3fn bits) with a bf16 output: forward attention only, and
# only its Hopper family (attention_sm90) serves it; the other families refuse it in their spaces.
FP8_DTYPE: DType = "e4m3"
ATTENTION_DTYPES: tuple[DType, ...] = (*DTYPES, FP8_DTYPE)
AlibiForm = Literal["none", "heads", "batch_heads"]  # ALiBi slopes: none, [heads], [batch, heads]
ALIBI_FORMS: tuple[AlibiForm, ...] = ("none", "heads", "batch_heads")
Layout = Literal["bhsd", "bshd"]  # q, k, v, o as [batch, heads, seq, d] or [batch, seq, heads, d]
LAYOUTS: tuple[Layout, ...] = ("bhsd", "bshd")


def dtype_bytes(dtype: DType) -> int:
    """Bytes per input element: 1 for e4m3, 2 for fp16 and bf16."""
    return ELEM_BYTES[dtype]


# GEMM inputs may also be FP8 e4m3 (gemm_sm90 on sm_90a: k32 wgmma), with an fp16 or bf16
# output; 16-bit GEMMs write their input dtype.
GEMM_DTYPES: tuple[DType, ...] = (*DTYPES, FP8_DTYPE)
ELEM_BYTES: dict[str, int] = {"fp16": 2, "bf16": 2, "e4m3": 1}
OPS = ("attention", "attention_bwd", "gemm")


def _check_positive_int(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}.{name}={value!r}: must be a positive integer")


def _check_dtype(owner: str, value: object, allowed: tuple[DType, ...] = DTYPES) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.dtype={value!r}: must be one of {', '.join(allowed)}")


def stable_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the only form keys are built from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class TileConfig:
    """One point of a kernel family's tile space.

    The five tile fields every family has are attributes; a family's own tunables (say the
    attention template's `q_in_regs` or the GEMM's `group_m`) are `options`, sorted by name,
    and read with `config.option(name, default)`. Family-specific rules (divisibility, shared
    memory, which options exist) live with the family's space; here only the rules every
    family shares are checked.
    """

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    options: tuple[tuple[str, int], ...] = ()

    FIELDS: ClassVar[tuple[str, ...]] = (
        "block_m",
        "block_n",
        "block_k",
        "num_warps",
        "num_stages",
    )

    def __post_init__(self) -> None:
        for name in self.FIELDS:
            _check_positive_int("TileConfig", name, getattr(self, name))
        # Warp-specialized Hopper kernels run whole warpgroups: 12 warps is a producer and two
        # consumer warpgroups (FlashAttention-3's tile).
        if self.num_warps & (self.num_warps - 1) and self.num_warps % 4:
            raise ValueError(
                f"TileConfig.num_warps={self.num_warps}: must be a power of two or a multiple "
                "of 4 (whole warpgroups)"
            )
        if self.num_threads > 1024:
            raise ValueError(
                f"TileConfig.num_warps={self.num_warps}: at most 32 warps (1024 threads) a block"
            )
        options = tuple(sorted(dict(self.options).items()))
        if len(options) != len(self.options):
            raise ValueError(f"TileConfig.options={self.options!r}: an option appears twice")
        for name, value in options:
            if not isinstance(name, str) or not name.isidentifier() or name in self.FIELDS:
                raise ValueError(
                    f"TileConfig.options: {name!r} is not a valid option name "
                    "(an identifier other than the five tile fields)"
                )
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TileConfig.{name}={value!r}: must be a non-negative integer")
        object.__setattr__(self, "options", options)

    @property
    def num_threads(self) -> int:
        return self.num_warps * WARP_SIZE

    def option(self, name: str, default: int | None = None) -> int:
        """The family tunable `name`; `default` when this config does not set it."""
        for key, value in self.options:
            if key == name:
                return value
        if default is None:
            raise KeyError(f"TileConfig {self}: no option {name!r}")
        return default

    def to_dict(self) -> dict[str, int]:
        return {**{name: getattr(self, name) for name in self.FIELDS}, **dict(self.options)}

    def key(self) -> str:
        return stable_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TileConfig:
        """The config of `{field or option: value}`; the five tile fields are required."""
        missing = [name for name in cls.FIELDS if name not in data]
        if missing:
            raise ValueError(
                f"config {dict(data)!r}: expected the keys {', '.join(cls.FIELDS)} "
                f"(and a family's options); missing {', '.join(missing)}"
            )
        options = tuple((k, v) for k, v in data.items() if k not in cls.FIELDS)
        return cls(**{name: data[name] for name in cls.FIELDS}, options=options)

    def __str__(self) -> str:
        text = f"m{self.block_m}n{self.block_n}k{self.block_k}w{self.num_warps}s{self.num_stages}"
        return text + "".join(f"-{name}{value}" for name, value in self.options)


@dataclass(frozen=True)
class AttentionProblem:
    """Forward attention: Q [batch, heads, seq_q, head_dim], K and V [batch, heads_kv, seq_kv,
    head_dim] (or [batch, seq, heads, head_dim] with layout "bshd").

    The variants follow FlashAttention-2: `heads_kv` divides `heads` (GQA/MQA: query head h reads
    KV head h // (heads // heads_kv)); `window_left`/`window_right` bound the keys a row sees
    (-1 = unbounded, bottom-right aligned, combined with `causal`; a side at least seq_kv is
    unbounded, as FA2 normalizes it); `softcap` > 0 caps scores as softcap * tanh(s / softcap);
    `alibi` names the slopes' shape ("heads" or "batch_heads"; "none" without ALiBi). A variant
    left at its default adds nothing to the keys, so existing keys are unchanged.

    `varlen`: `batch` sequences packed along one axis (layout "bshd" with batch 1, FA2's
    cu_seqlens convention); seq_q and seq_kv are the longest sequence's lengths, and the kernel
    key names their length bucket (the next power of two) instead, so one tuned kernel serves
    every length distribution of the bucket.
    """

    batch: int
    heads: int
    seq_q: int
    seq_kv: int
    head_dim: int
    dtype: DType = "fp16"
    causal: bool = False
    heads_kv: int | None = None  # None: heads (multi-head attention)
    window_left: int = -1
    window_right: int = -1
    softcap: float = 0.0
    alibi: AlibiForm = "none"
    layout: Layout = "bhsd"
    varlen: bool = False

    op: ClassVar[str] = "attention"
    family: ClassVar[str] = "attention_fwd"

    def __post_init__(self) -> None:
        for name in ("batch", "heads", "seq_q", "seq_kv", "head_dim"):
            _check_positive_int("AttentionProblem", name, getattr(self, name))
        _check_dtype("AttentionProblem", self.dtype, ATTENTION_DTYPES)
        if not isinstance(self.causal, bool):
            raise ValueError(f"AttentionProblem.causal={self.causal!r}: must be a bool")
        if self.heads_kv is None:
            object.__setattr__(self, "heads_kv", self.heads)
        _check_positive_int("AttentionProblem", "heads_kv", self.heads_kv)
        if self.heads % self.kv_heads:
            raise ValueError(
                f"AttentionProblem.heads_kv={self.heads_kv}: must divide heads={self.heads} "
                "(each KV head serves heads // heads_kv query heads)"
            )
        left, right = normalized_window(
            (self.window_left, self.window_right), self.seq_kv, causal=self.causal
        )
        object.__setattr__(self, "window_left", left)
        object.__setattr__(self, "window_right", right)
        cap = self.softcap
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0.0 <= cap < math.inf:
            raise ValueError(
                f"AttentionProblem.softcap={cap!r}: must be 0 (off) or a positive finite float"
            )
        object.__setattr__(self, "softcap", float(cap))
        if self.alibi not in ALIBI_FORMS:
            raise ValueError(
                f"AttentionProblem.alibi={self.alibi!r}: must be one of {', '.join(ALIBI_FORMS)}"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"AttentionProblem.layout={self.layout!r}: must be one of {', '.join(LAYOUTS)}"
            )
        if not isinstance(self.varlen, bool) or (self.varlen and self.layout != "bshd"):
            raise ValueError(
                f"AttentionProblem.varlen={self.varlen!r}: must be a bool, and True only with "
                "layout='bshd' (packed [total, heads, head_dim] sequences)"
            )

    @property
    def kv_heads(self) -> int:
        """heads_kv as an int (the field is None only before __post_init__)."""
        return self.heads if self.heads_kv is None else self.heads_kv

    @property
    def has_window(self) -> bool:
        return self.window_left >= 0 or self.window_right >= 0

    def flops(self) -> float:
        """Forward FLOPs, counted as every published FlashAttention benchmark counts them."""
        total = 4.0 * self.batch * self.heads * self.seq_q * self.seq_kv * self.head_dim
        return total / 2 if self.causal else total

    def io_bytes(self) -> int:
        q_elems = self.batch * self.heads * self.head_dim * self.seq_q
        kv_elems = self.batch * self.kv_heads * self.head_dim * 2 * self.seq_kv
        elems_out = self.batch * self.heads * self.head_dim * self.seq_q  # O in 16 bits
        lse_bytes = self.batch * self.heads * self.seq_q * 4
        return (q_elems + kv_elems) * dtype_bytes(self.dtype) + elems_out * DTYPE_BYTES + lse_bytes

    def variant_suffix(self, *, generic: bool = False) -> str:
        """The key words of the non-default variants ('' for plain attention); a generic kernel
        takes the values at run time, so its key names only which variants it compiles in."""
        words = []
        if self.kv_heads != self.heads:
            words.append("gqa" if generic else f"hkv{self.kv_heads}")
        if self.has_window:
            words.append("window" if generic else f"win{self.window_left}_{self.window_right}")
        if self.softcap:
            words.append("softcap" if generic else f"cap{self.softcap:g}")
        if self.alibi != "none":
            words.append("alibi" if generic else f"alibi_{self.alibi}")
        if self.layout != "bhsd":
            words.append(self.layout)
        if self.varlen:
            words.append("varlen")
        return "".join(f".{w}" for w in words)

    def kernel_key(self, arch: str, *, family: str | None = None) -> str:
        """`family` (default: the op's own) names the family serving it, first in the key."""
        mask = "causal" if self.causal else "noncausal"
        seq_q, seq_kv = self.seq_q, self.seq_kv
        if self.varlen:  # the length bucket: lengths are read at run time
            seq_q, seq_kv = length_bucket(seq_q), length_bucket(seq_kv)
        return (
            f"{family or self.family}.{self.dtype}.b{self.batch}.h{self.heads}.sq{seq_q}"
            f".skv{seq_kv}.d{self.head_dim}.{mask}{self.variant_suffix()}.{arch}"
        )

    def generic_key(self, arch: str, *, family: str | None = None) -> str:
        """The key of the generic (runtime-shape) kernel serving this problem class."""
        mask = "causal" if self.causal else "noncausal"
        variants = self.variant_suffix(generic=True)
        return (
            f"{family or self.family}.{self.dtype}.d{self.head_dim}.{mask}{variants}.{arch}.generic"
        )

    def shape_str(self) -> str:
        return f"{self.batch}x{self.heads}x{self.seq_q}x{self.seq_kv}x{self.head_dim}"

    def to_dict(self) -> dict[str, Any]:
        """Every field, except the variants left at their defaults (old records stay equal)."""
        data = {"op": self.op, **asdict(self)}
        defaults = {
            "heads_kv": self.heads,
            "window_left": -1,
            "window_right": -1,
            "softcap": 0.0,
            "alibi": "none",
            "layout": "bhsd",
            "varlen": False,
        }
        for name, default in defaults.items():
            if data[name] == default:
                del data[name]
        return data


def length_bucket(length: int) -> int:
    """The power of two at or above `length` (at least 16): a varlen kernel key's length."""
    return max(16, 1 << (length - 1).bit_length())


def normalized_window(window: tuple[int, int], seq_kv: int, *, causal: bool) -> tuple[int, int]:
    """FlashAttention-2's window: a side >= seq_kv is unbounded (-1), and with `causal` the
    right side is the diagonal (kept as -1: the causal mask already bounds it).

    Raises:
        ValueError: a side that is not an integer >= -1.
    """
    sides = []
    for name, side in zip(("window_left", "window_right"), window, strict=True):
        if isinstance(side, bool) or not isinstance(side, int) or side < -1:
            raise ValueError(f"{name}={side!r}: must be an integer >= 0, or -1 for unbounded")
        sides.append(-1 if side >= seq_kv else side)
    left, right = sides
    return left, -1 if causal else right


@dataclass(frozen=True)
class AttentionBackwardProblem(AttentionProblem):
    """Attention's backward (dQ, dK, dV from Q, K, V, O, LSE and dO) over the forward's shapes."""

    op: ClassVar[str] = "attention_bwd"
    family: ClassVar[str] = "attention_bwd"

    def flops(self) -> float:
        """2.5x the forward's, as FlashAttention-2's benchmarks count the backward
        (five matrix products of the forward's size against its two)."""
        return 2.5 * super().flops()

    def io_bytes(self) -> int:
        """Reads Q, K, V, O, dO and LSE; writes dQ, dK and dV."""
        q_elems = self.batch * self.heads * self.seq_q * self.head_dim
        kv_elems = self.batch * self.kv_heads * self.seq_kv * self.head_dim  # GQA: heads_kv
        lse_bytes = self.batch * self.heads * self.seq_q * 4
        return (4 * q_elems + 4 * kv_elems) * DTYPE_BYTES + lse_bytes


# Decode kernels are tuned per cache-length bucket, not per length: the bucket is the least power
# of two holding the longest sequence of the batch, at least this many keys.
MIN_DECODE_KV_BUCKET = 64


def decode_kv_bucket(max_seqlen_k: int) -> int:
    """The cache-length bucket of a decode call whose longest sequence has `max_seqlen_k` keys."""
    bucket = MIN_DECODE_KV_BUCKET
    while bucket < max_seqlen_k:
        bucket *= 2
    return bucket


@dataclass(frozen=True)
class AttentionDecodeProblem(AttentionProblem):
    """Decoding against a (paged) KV cache, flash_attn_with_kvcache's convention.

    q [batch, seq_q, heads, head_dim]; caches [num_blocks, page_size, heads_kv, head_dim] with
    a block table (page_size > 0) or [batch, capacity, heads_kv, head_dim] (page_size 0).
    `seq_kv` is the cache-length bucket (decode_kv_bucket), not any one sequence's length:
    lengths are per batch entry and read at run time. `alibi` ("heads": slopes [heads],
    "batch_heads": [batch, heads], float32) compiles the ALiBi bias in; "none" adds nothing to
    the keys, so keys without ALiBi are unchanged.
    """

    heads_kv: int = 1
    page_size: int = 0  # 0: a contiguous [batch, capacity, heads_kv, d] cache, no block table

    op: ClassVar[str] = "attention_decode"
    family: ClassVar[str] = "attention_decode"

    def __post_init__(self) -> None:
        for name in ("batch", "heads", "seq_q", "seq_kv", "head_dim", "heads_kv"):
            _check_positive_int("AttentionDecodeProblem", name, getattr(self, name))
        _check_dtype("AttentionDecodeProblem", self.dtype)
        if not isinstance(self.causal, bool):
            raise ValueError(f"AttentionDecodeProblem.causal={self.causal!r}: must be a bool")
        if self.heads % self.heads_kv:
            raise ValueError(
                f"AttentionDecodeProblem.heads={self.heads}: must be a multiple of "
                f"heads_kv={self.heads_kv} (GQA/MQA groups of query heads share one KV head)"
            )
        page = self.page_size
        if not isinstance(page, int) or isinstance(page, bool) or page < 0:
            raise ValueError(
                f"AttentionDecodeProblem.page_size={page!r}: must be 0 (no block table) or a "
                "positive number of keys per page"
            )
        if self.alibi not in ALIBI_FORMS:
            raise ValueError(
                f"AttentionDecodeProblem.alibi={self.alibi!r}: must be one of "
                f"{', '.join(ALIBI_FORMS)}"
            )

    def flops(self) -> float:
        """Q K^T and P V over the whole bucket (every query row against seq_kv keys)."""
        return 4.0 * self.batch * self.heads * self.seq_q * self.seq_kv * self.head_dim

    def io_bytes(self) -> int:
        """Reads the K and V cache of every KV head, reads Q and writes O and LSE."""
        kv_elems = 2 * self.batch * self.heads_kv * self.seq_kv * self.head_dim
        q_elems = 2 * self.batch * self.heads * self.seq_q * self.head_dim
        return (kv_elems + q_elems) * DTYPE_BYTES + self.batch * self.heads * self.seq_q * 4

    def _page(self) -> str:
        return f"page{self.page_size}" if self.page_size else "pagenone"

    def kernel_key(self, arch: str, *, family: str | None = None) -> str:
        mask = "causal" if self.causal else "noncausal"
        return (
            f"{family or self.family}.{self.dtype}.b{self.batch}.hq{self.heads}.hkv{self.heads_kv}"
            f".sq{self.seq_q}.kv{self.seq_kv}.d{self.head_dim}.{self._page()}.{mask}"
            f"{self._alibi(generic=False)}.{arch}"
        )

    def _alibi(self, *, generic: bool) -> str:
        if self.alibi == "none":
            return ""
        return ".alibi" if generic else f".alibi_{self.alibi}"

    def generic_key(self, arch: str, *, family: str | None = None) -> str:
        """One generic kernel per dtype, head_dim and cache kind (paged or not)."""
        paged = "paged" if self.page_size else "pagenone"
        alibi = self._alibi(generic=True)
        return (
            f"{family or self.family}.{self.dtype}.d{self.head_dim}.{paged}{alibi}.{arch}.generic"
        )

    def shape_str(self) -> str:
        """BxHQxHKVxSQxKVxD[xP]: the generator.tune --op attention_decode --shape form."""
        text = (
            f"{self.batch}x{self.heads}x{self.heads_kv}x{self.seq_q}x{self.seq_kv}x{self.head_dim}"
        )
        return text + (f"x{self.page_size}" if self.page_size else "")


GemmLayout = Literal["nn", "nt", "tn", "tt"]
GEMM_LAYOUTS: tuple[GemmLayout, ...] = ("nn", "nt", "tn", "tt")


@dataclass(frozen=True)
class GemmProblem:
    """C[M,N] = op(A) @ op(B), row-major C, output in the input dtype; e4m3 inputs write
    `out_dtype` (bf16 unless fp16 is asked for).

    `layout` names A's then B's storage, BLAS style: n = as given (A [M,K], B [K,N]),
    t = transposed (A stored [K,M], C = Aᵀ...; B stored [N,K], C = ...Bᵀ).
    """

    m: int
    n: int
    k: int
    dtype: DType = "fp16"
    _: KW_ONLY  # the layout and the FP8 output dtype are named, never positional
    layout: GemmLayout = "nn"
    # Only e4m3 inputs choose: "fp16", or None for bf16. Normalized to None whenever it is the
    # default, so dataclasses.replace(problem, dtype=...) keeps a valid problem.
    out_dtype: DType | None = None

    op: ClassVar[str] = "gemm"
    family: ClassVar[str] = "gemm"

    def __post_init__(self) -> None:
        for name in ("m", "n", "k"):
            _check_positive_int("GemmProblem", name, getattr(self, name))
        if self.dtype not in GEMM_DTYPES:
            raise ValueError(
                f"GemmProblem.dtype={self.dtype!r}: must be one of {', '.join(GEMM_DTYPES)}"
            )
        if self.layout not in GEMM_LAYOUTS:
            raise ValueError(
                f"GemmProblem.layout={self.layout!r}: must be one of {', '.join(GEMM_LAYOUTS)} "
                "(A's then B's storage: n as given, t transposed)"
            )
        default_out = "bf16" if self.dtype == "e4m3" else self.dtype
        allowed = DTYPES if self.dtype == "e4m3" else (self.dtype,)
        if self.out_dtype is not None and self.out_dtype not in allowed:
            raise ValueError(
                f"GemmProblem.out_dtype={self.out_dtype!r}: for {self.dtype} inputs one of "
                f"{', '.join(allowed)} (or None: {default_out})"
            )
        if self.out_dtype == default_out:
            object.__setattr__(self, "out_dtype", None)

    @property
    def output_dtype(self) -> DType:
        """C's dtype: the input dtype, or for e4m3 inputs out_dtype (default bf16)."""
        if self.dtype == "e4m3":
            return self.out_dtype or "bf16"
        return self.dtype

    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    def io_bytes(self) -> int:
        inputs = (self.m * self.k + self.k * self.n) * ELEM_BYTES[self.dtype]
        return inputs + self.m * self.n * ELEM_BYTES[self.output_dtype]

    @property
    def dtype_key(self) -> str:
        """The dtype part of keys: 'bf16', or 'e4m3-bf16' when the output dtype differs."""
        if self.output_dtype == self.dtype:
            return self.dtype
        return f"{self.dtype}-{self.output_dtype}"

    def _layout_part(self) -> str:
        # NN keeps the key it had before layouts existed: its cached kernels stay valid.
        return "" if self.layout == "nn" else f".{self.layout}"

    def kernel_key(self, arch: str, *, family: str | None = None) -> str:
        """`family` (default: gemm) names the family serving it, first in the key."""
        return (
            f"{family or self.family}.{self.dtype_key}{self._layout_part()}"
            f".m{self.m}.n{self.n}.k{self.k}.{arch}"
        )

    def generic_key(self, arch: str, *, family: str | None = None) -> str:
        """One generic kernel per family, dtype, layout and arch. A family with alignment rules
        (gemm_sm90: N and K multiples of 8) names itself, so its class holds aligned problems
        only and the op's own family (gemm) serves the rest."""
        return f"{family or self.family}.{self.dtype_key}{self._layout_part()}.{arch}.generic"

    def shape_str(self) -> str:
        return f"{self.m}x{self.n}x{self.k}"

    def to_dict(self) -> dict[str, Any]:
        data = {"op": self.op, **asdict(self)}
        if self.layout == "nn":
            del data["layout"]  # as before layouts existed
        if self.out_dtype is None:
            del data["out_dtype"]  # 16-bit GEMMs read as before FP8 existed
        return data


Problem = AttentionProblem | GemmProblem

SHAPE_FORMS = {
    "attention": "BxHxSxD or BxHxSQxSKVxD (batch, heads, sequence length(s), head_dim)",
    "attention_bwd": "BxHxSxD or BxHxSQxSKVxD (the forward's shape)",
    "gemm": "MxNxK",
    "attention_decode": "BxHQxHKVxSQxKVxD or BxHQxHKVxSQxKVxDxPAGE (batch, query heads, KV heads, "
    "query tokens, cache-length bucket, head_dim, keys per page)",
}


SHAPE_EXAMPLES = {
    "attention": "8x16x2048x64",
    "attention_bwd": "8x16x2048x64",
    "gemm": "4096x4096x4096",
    "attention_decode": "8x32x8x1x4096x128x16",
}


def parse_shape(
    op: str,
    shape: str,
    *,
    dtype: DType = "fp16",
    causal: bool = False,
    layout: GemmLayout = "nn",
) -> Problem:
    """Parse a CLI shape such as '8x16x2048x64' into a problem; ValueError names the form."""
    if op not in SHAPE_FORMS:
        raise ValueError(f"op={op!r}: expected one of {', '.join(OPS)}")
    parts = shape.lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if any(d <= 0 for d in dims):
        dims = []
    if op != "gemm" and layout != "nn":
        raise ValueError("--layout applies to gemm only")
    if op in ("attention", "attention_bwd"):
        kind = AttentionProblem if op == "attention" else AttentionBackwardProblem
        if len(dims) == 4:
            b, h, s, d = dims
            return kind(b, h, s, s, d, dtype=dtype, causal=causal)
        if len(dims) == 5:
            b, h, sq, skv, d = dims
            return kind(b, h, sq, skv, d, dtype=dtype, causal=causal)
    elif op == "attention_decode":
        if len(dims) in (6, 7):
            b, hq, hkv, sq, kv, d = dims[:6]
            page = dims[6] if len(dims) == 7 else 0
            return AttentionDecodeProblem(
                b,
                hq,
                sq,
                decode_kv_bucket(kv),
                d,
                dtype,
                causal,
                heads_kv=hkv,
                page_size=page,
            )
    elif len(dims) == 3:
        if causal:
            raise ValueError("--causal applies to attention only, not gemm")
        m, n, k = dims
        return GemmProblem(m, n, k, dtype=dtype, layout=layout)
    raise ValueError(
        f"--shape {shape!r}: expected {SHAPE_FORMS[op]} with positive integers, "
        f"e.g. {SHAPE_EXAMPLES[op]}"
    )


def problem_from_dict(data: dict[str, Any]) -> Problem:
    """Inverse of `Problem.to_dict()`."""
    body = {k: v for k, v in data.items() if k != "op"}
    if data.get("op") == "attention":
        return AttentionProblem(**body)
    if data.get("op") == "attention_bwd":
        return AttentionBackwardProblem(**body)
    if data.get("op") == "gemm":
        return GemmProblem(**body)
    if data.get("op") == "attention_decode":
        return AttentionDecodeProblem(**body)
    raise ValueError(f"problem {data!r}: 'op' must be one of {', '.join(OPS)}")
