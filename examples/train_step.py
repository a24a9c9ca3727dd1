"""A few training steps of a small transformer block whose attention is runtime.torch.attention.

The block (pre-norm attention and MLP, fp32 weights) casts q, k, v to fp16 (or bf16) for our
attention, whose forward and backward run through the tiered Runtime: on the host emulator by
default (the forward's and the backward's generic kernels from their second call on),
`--device cpu` for tier 1 only (fastest), or
`--device cuda` on CUDA tensors. It prints the loss of each step and, at the end, how many
forward and backward calls each tier served. Run: `python examples/train_step.py`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

# Runnable from a checkout without `pip install -e .`: the packages live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime.torch as tt
from runtime import Runtime, RuntimeConfig
from tessera_core.cli import ArgumentParser, int_at_least, run_cli

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, *, dim: int, heads: int, dtype: torch.dtype, runtime: Runtime) -> None:
        super().__init__()
        self.heads, self.dtype, self.runtime = heads, dtype, runtime
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, seq, 3, self.heads, dim // self.heads)
        # [batch, heads, seq, head_dim], contiguous, in the kernels' 16-bit dtype.
        q, k, v = (t.transpose(1, 2).to(self.dtype).contiguous() for t in qkv.unbind(dim=2))
        attended = tt.attention(q, k, v, causal=True, runtime=self.runtime)
        x = x + self.proj(attended.float().transpose(1, 2).reshape(batch, seq, dim))
        return x + self.mlp(self.norm2(x))


def tier_mix(runtime: Runtime) -> dict[str, Counter[int]]:
    """Calls per tier of each op (attention is the forward, attention_bwd the backward)."""
    mix: dict[str, Counter[int]] = {}
    for record in runtime.history():
        if record.event == "call" and record.ok:
            mix.setdefault(record.op, Counter())[record.tier] += 1
    return mix


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="emulator", choices=("emulator", "cpu", "cuda", "auto"))
    parser.add_argument("--steps", type=int_at_least(2), default=8)
    parser.add_argument("--batch", type=int_at_least(1), default=2)
    parser.add_argument("--seq", type=int_at_least(1), default=48)
    parser.add_argument("--heads", type=int_at_least(1), default=2)
    parser.add_argument(
        "--head-dim", type=int_at_least(16), default=32, help="a multiple of 16 up to 128"
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    if args.head_dim % 16 or args.head_dim > 128:
        parser.error(f"--head-dim {args.head_dim}: expected a multiple of 16 up to 128")

    torch.manual_seed(0)
    # Tier 3 (background tuning: minutes of compiling) is off; basic_usage.py shows it. On
    # device='cpu' nothing runs compiled, so nothing is compiled either.
    config = RuntimeConfig(
        device=args.device, tier2=args.device != "cpu", tier2_min_calls=1, tier3=False
    )
    with Runtime(config=config) as runtime:
        device = torch.device("cuda" if runtime.device == "cuda" else "cpu")
        dim = args.heads * args.head_dim
        block = Block(dim=dim, heads=args.heads, dtype=DTYPES[args.dtype], runtime=runtime)
        block.to(device)
        optimizer = torch.optim.AdamW(block.parameters(), lr=args.lr)
        # A fixed regression task: map random sequences to a fixed random transform of them.
        x = torch.randn(args.batch, args.seq, dim, device=device)
        target = torch.tanh(x @ torch.randn(dim, dim, device=device) / dim**0.5)
        print(f"runtime on {runtime.device} ({runtime.arch}); block dim {dim}, {args.dtype}")
        losses = []
        start_s = time.perf_counter()
        for step in range(1, args.steps + 1):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(block(x), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            print(f"step {step:3d}: loss {losses[-1]:.5f}")
        elapsed_s = time.perf_counter() - start_s
        print(
            f"\n{args.steps} steps in {elapsed_s:.1f} s; loss {losses[0]:.5f} -> {losses[-1]:.5f}"
        )
        print("calls per tier (1 reference, 2 generic kernel, 3 tuned kernel):")
        for op, counts in sorted(tier_mix(runtime).items()):
            role = "backward" if op.endswith("_bwd") else "forward"
            tiers = "  ".join(f"tier {t}: {counts[t]:3d}" for t in (1, 2, 3))
            print(f"  {op:14s} ({role:8s})  {tiers}")
    if not losses[-1] < losses[0]:
        print("error: the loss did not go down", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="examples/train_step.py"))
