"""The value types every package shares: dtypes, tile configurations and problem descriptions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

from tessera_core.hardware import WARP_SIZE

DType = Literal["fp16", "bf16"]
DTYPES: tuple[DType, ...] = ("fp16", "bf16")
DTYPE_BYTES = 2
# GEMM inputs may also be FP8 e4m3 (gemm_sm90 on sm_90a: k32 wgmma), with an fp16 or bf16
# output; 16-bit GEMMs write their input dtype.
GemmDType = Literal["fp16", "bf16", "e4m3"]
GEMM_DTYPES: tuple[GemmDType, ...] = ("fp16", "bf16", "e4m3")
ELEM_BYTES: dict[str, int] = {"fp16": 2, "bf16": 2, "e4m3": 1}
OPS = ("attention", "gemm")


def _check_positive_int(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}.{name}={value!r}: must be a positive integer")


def _check_dtype(owner: str, value: object) -> None:
    if value not in DTYPES:
        raise ValueError(f"{owner}.dtype={value!r}: must be one of {', '.join(DTYPES)}")


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
        if self.num_warps & (self.num_warps - 1):
            raise ValueError(f"TileConfig.num_warps={self.num_warps}: must be a power of two")
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
    """Forward attention over Q, K, V of layout [batch, heads, seq, head_dim]."""

    batch: int
    heads: int
    seq_q: int
    seq_kv: int
    head_dim: int
    dtype: DType = "fp16"
    causal: bool = False

    op: ClassVar[str] = "attention"
    family: ClassVar[str] = "attention_fwd"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name not in ("dtype", "causal"):
                _check_positive_int("AttentionProblem", f.name, getattr(self, f.name))
        _check_dtype("AttentionProblem", self.dtype)
        if not isinstance(self.causal, bool):
            raise ValueError(f"AttentionProblem.causal={self.causal!r}: must be a bool")

    def flops(self) -> float:
        """Forward FLOPs, counted as every published FlashAttention benchmark counts them."""
        total = 4.0 * self.batch * self.heads * self.seq_q * self.seq_kv * self.head_dim
        return total / 2 if self.causal else total

    def io_bytes(self) -> int:
        elems = self.batch * self.heads * self.head_dim * (2 * self.seq_q + 2 * self.seq_kv)
        lse_bytes = self.batch * self.heads * self.seq_q * 4
        return elems * DTYPE_BYTES + lse_bytes

    def kernel_key(self, arch: str, *, family: str | None = None) -> str:
        """`family` (default: the op's own) names the family serving it, first in the key."""
        mask = "causal" if self.causal else "noncausal"
        return (
            f"{family or self.family}.{self.dtype}.b{self.batch}.h{self.heads}.sq{self.seq_q}"
            f".skv{self.seq_kv}.d{self.head_dim}.{mask}.{arch}"
        )

    def generic_key(self, arch: str, *, family: str | None = None) -> str:
        """The key of the generic (runtime-shape) kernel serving this problem class."""
        mask = "causal" if self.causal else "noncausal"
        return f"{family or self.family}.{self.dtype}.d{self.head_dim}.{mask}.{arch}.generic"

    def shape_str(self) -> str:
        return f"{self.batch}x{self.heads}x{self.seq_q}x{self.seq_kv}x{self.head_dim}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **asdict(self)}


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
        kv_elems = self.batch * self.heads * self.seq_kv * self.head_dim
        lse_bytes = self.batch * self.heads * self.seq_q * 4
        return (4 * q_elems + 4 * kv_elems) * DTYPE_BYTES + lse_bytes


@dataclass(frozen=True)
class GemmProblem:
    """C[M,N] = A[M,K] @ B[K,N], row-major, output in the input dtype; e4m3 inputs write
    `out_dtype` (bf16 unless fp16 is asked for)."""

    m: int
    n: int
    k: int
    dtype: GemmDType = "fp16"
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

    def kernel_key(self, arch: str, *, family: str | None = None) -> str:
        """`family` (default: gemm) names the family serving it, first in the key."""
        return f"{family or self.family}.{self.dtype_key}.m{self.m}.n{self.n}.k{self.k}.{arch}"

    def generic_key(self, arch: str, *, family: str | None = None) -> str:
        """One generic kernel per family, dtype and arch. A family with alignment rules
        (gemm_sm90: N and K multiples of 8) names itself, so its class holds aligned problems
        only and the op's own family (gemm) serves the rest."""
        return f"{family or self.family}.{self.dtype_key}.{arch}.generic"

    def shape_str(self) -> str:
        return f"{self.m}x{self.n}x{self.k}"

    def to_dict(self) -> dict[str, Any]:
        data = {"op": self.op, **asdict(self)}
        if self.out_dtype is None:
            del data["out_dtype"]  # 16-bit GEMMs read as before FP8 existed
        return data


Problem = AttentionProblem | GemmProblem

SHAPE_FORMS = {
    "attention": "BxHxSxD or BxHxSQxSKVxD (batch, heads, sequence length(s), head_dim)",
    "gemm": "MxNxK",
}


def parse_shape(op: str, shape: str, *, dtype: GemmDType = "fp16", causal: bool = False) -> Problem:
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
    if op == "attention":
        if len(dims) == 4:
            b, h, s, d = dims
            return AttentionProblem(b, h, s, s, d, dtype=dtype, causal=causal)  # type: ignore[arg-type]
        if len(dims) == 5:
            b, h, sq, skv, d = dims
            return AttentionProblem(b, h, sq, skv, d, dtype=dtype, causal=causal)  # type: ignore[arg-type]
    elif len(dims) == 3:
        if causal:
            raise ValueError("--causal applies to attention only, not gemm")
        m, n, k = dims
        return GemmProblem(m, n, k, dtype=dtype)
    raise ValueError(
        f"--shape {shape!r}: expected {SHAPE_FORMS[op]} with positive integers, "
        f"e.g. {'8x16x2048x64' if op == 'attention' else '4096x4096x4096'}"
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
    raise ValueError(f"problem {data!r}: 'op' must be one of {', '.join(OPS)}")
