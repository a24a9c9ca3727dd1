"""Signature: what identifies a call for dispatch and tracing (op, dtype, shape, causal, scale)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera_core.types import (
    AttentionBackwardProblem,
    AttentionProblem,
    DType,
    GemmProblem,
    Problem,
)

# The hashable tuple the dispatcher keys its per-signature state by; building a tuple is
# several times cheaper than building (and hashing) a dataclass on every call.
SignatureKey = tuple[str, str, tuple[int, ...], bool, "float | None", str]


@dataclass(frozen=True)
class Signature:
    """One call's identity; shape is (batch, heads, seq_q, seq_kv, head_dim) for attention and
    attention_bwd, (m, n, k) for gemm, whose `layout` (nn, nt, tn, tt) says which operand is
    stored transposed (always "nn" for attention)."""

    op: str
    dtype: DType
    shape: tuple[int, ...]
    causal: bool = False
    scale: float | None = None
    layout: str = "nn"

    @classmethod
    def from_key(cls, key: SignatureKey) -> Signature:
        op, dtype, shape, causal, scale, layout = key
        return cls(op, dtype, shape, causal, scale, layout)  # type: ignore[arg-type]

    def key(self) -> SignatureKey:
        return (self.op, self.dtype, self.shape, self.causal, self.scale, self.layout)

    def problem(self) -> Problem:
        if self.op == "attention":
            b, h, sq, skv, d = self.shape
            return AttentionProblem(b, h, sq, skv, d, dtype=self.dtype, causal=self.causal)
        if self.op == "attention_bwd":
            b, h, sq, skv, d = self.shape
            return AttentionBackwardProblem(b, h, sq, skv, d, dtype=self.dtype, causal=self.causal)
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
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "causal": self.causal,
            "scale": self.scale,
            **({} if self.layout == "nn" else {"layout": self.layout}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            data["op"],
            data["dtype"],
            tuple(int(d) for d in data["shape"]),
            bool(data.get("causal", False)),
            data.get("scale"),
            str(data.get("layout", "nn")),
        )
