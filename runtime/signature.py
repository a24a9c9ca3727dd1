"""Signature: what identifies a call for dispatch and tracing (op, dtype, shape, causal, scale,
and attention's variants)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera_core.types import (
    AttentionBackwardProblem,
    AttentionDecodeProblem,
    AttentionProblem,
    DType,
    GemmProblem,
    Problem,
)

# Attention's non-default variants as sorted (AttentionProblem field, value) pairs, e.g.
# (("heads_kv", 2), ("window_left", 256)); () for plain attention and every other op. A varlen
# call adds ("max_seqlen", (max_seqlen_q, max_seqlen_k)), which its kernels launch by.
Variant = tuple[tuple[str, Any], ...]
MAX_SEQLEN = "max_seqlen"
# The hashable tuple the dispatcher keys its per-signature state by; building a tuple is
# several times cheaper than building (and hashing) a dataclass on every call.
SignatureKey = tuple[str, str, tuple[int, ...], bool, "float | None", Variant]


@dataclass(frozen=True)
class Signature:
    """One call's identity; shape is (batch, heads, seq_q, seq_kv, head_dim) for attention and
    attention_bwd, (m, n, k) for gemm, (batch, heads_q, heads_kv, seq_q, cache-length bucket,
    head_dim, page_size or 0) for attention_decode (its variant: ("alibi", form) with ALiBi
    slopes). A gemm's variant holds its operand layout
    (("layout", "nt") etc.; plain "nn" is ())."""

    op: str
    dtype: DType
    shape: tuple[int, ...]
    causal: bool = False
    scale: float | None = None
    variant: Variant = ()

    @classmethod
    def from_key(cls, key: SignatureKey) -> Signature:
        op, dtype, shape, causal, scale, variant = key
        return cls(op, dtype, shape, causal, scale, variant)  # type: ignore[arg-type]

    def key(self) -> SignatureKey:
        return (self.op, self.dtype, self.shape, self.causal, self.scale, self.variant)

    @property
    def layout(self) -> str:
        """A gemm's operand layout (nn, nt, tn, tt); "nn" for every other op."""
        return str(dict(self.variant).get("layout", "nn")) if self.op == "gemm" else "nn"

    def problem(self) -> Problem:
        if self.op == "attention":
            b, h, sq, skv, d = self.shape
            return AttentionProblem(
                b,
                h,
                sq,
                skv,
                d,
                dtype=self.dtype,
                causal=self.causal,
                **problem_fields(self.variant),
            )
        if self.op == "attention_bwd":
            b, h, sq, skv, d = self.shape
            return AttentionBackwardProblem(
                b,
                h,
                sq,
                skv,
                d,
                dtype=self.dtype,
                causal=self.causal,
                **problem_fields(self.variant),
            )
        if self.op == "attention_decode":
            b, hq, hkv, sq, kv, d, page = self.shape
            return AttentionDecodeProblem(
                b, hq, sq, kv, d, self.dtype, self.causal, heads_kv=hkv, page_size=page,
                alibi=dict(self.variant).get("alibi", "none"),
            )  # fmt: skip
        m, n, k = self.shape
        return GemmProblem(m, n, k, dtype=self.dtype, layout=self.layout)  # type: ignore[arg-type]

    def label(self) -> str:
        """Human-readable form, e.g. 'attention fp16 1x2x64x64x64 causal scale=0.125'."""
        text = f"{self.op} {self.dtype} {'x'.join(map(str, self.shape))}"
        if self.layout != "nn":
            text += f" {self.layout}"
        if self.causal:
            text += " causal"
        if self.scale is not None:
            text += f" scale={self.scale:g}"
        text += "".join(f" {name}={value}" for name, value in self.variant)
        return text

    def to_dict(self) -> dict[str, Any]:
        data = {
            "op": self.op,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "causal": self.causal,
            "scale": self.scale,
        }
        if self.variant:  # absent for plain calls: traces of those stay as they were
            data["variant"] = dict(self.variant)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            data["op"],
            data["dtype"],
            tuple(int(d) for d in data["shape"]),
            bool(data.get("causal", False)),
            data.get("scale"),
            tuple(  # JSON lists (a varlen max_seqlen pair) back to hashable tuples
                (name, tuple(value) if isinstance(value, list) else value)
                for name, value in sorted(dict(data.get("variant") or {}).items())
            ),
        )


def problem_fields(variant: Variant) -> dict[str, Any]:
    """The variant's AttentionProblem fields (all but a varlen call's max_seqlen)."""
    return {name: value for name, value in variant if name != MAX_SEQLEN}


def attention_options(variant: Variant) -> dict[str, Any]:
    """The variant as the keywords of attention_reference and emulator.run_attention
    (window_size, softcap, layout; GQA follows from k's shape, ALiBi from the slopes input)."""
    fields = dict(variant)
    return {
        "window_size": (fields.get("window_left", -1), fields.get("window_right", -1)),
        "softcap": fields.get("softcap", 0.0),
        "layout": fields.get("layout", "bhsd"),
    }
