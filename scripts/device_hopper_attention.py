"""The Hopper stage's attention sweep: attention_sm90 configurations on the side-by-side shapes
beside SDPA's flash and cuDNN backends, each configuration first checked against float64 at a
ragged shape.

The shapes are FlashAttention's benchmark shapes (fp16, batch 8, 16 heads, seq 2048/8192,
head_dim 64/128, causal or not). The configurations are the family's default and the
alternatives the first H100 run measured fastest (docs/device-reports/2026-11-26-h100.md), so
a later device sees whether the default is still the one to ship.
"""

from __future__ import annotations

from typing import Any

from device_stages import (
    OurKernel,
    _attention_tensors,
    _check,
    _median_ms,
    _tflops,
    default_and_completed,
)

from tessera_core.types import AttentionProblem, TileConfig

ARCH = "sm_90a"
SHAPES = tuple(
    AttentionProblem(8, 16, seq, seq, head_dim, causal=causal)
    for head_dim in (64, 128)
    for seq in (2048, 8192)
    for causal in (False, True)
)
# Partial configs completed by generator.inspect; one that does not fit a shape is left out.
ALTERNATIVES: tuple[dict[str, int], ...] = (
    {"block_m": 128, "block_n": 128, "num_stages": 2, "pingpong": 1},
    {"block_m": 128, "block_n": 192, "num_stages": 2, "pingpong": 1},
)
CHECK_BATCH, CHECK_HEADS, CHECK_SEQ_Q, CHECK_SEQ_KV = 2, 4, 1000, 1037  # ragged on both sides


def configs(problem: AttentionProblem) -> list[TileConfig]:
    """The default of the family serving `problem` on sm_90a, then the alternatives that fit."""
    from templates.registry import family_for

    return default_and_completed(family_for(problem, ARCH), problem, ARCH, ALTERNATIVES)


def _checked(problem: AttentionProblem, config: TileConfig) -> dict[str, Any]:
    """`config` run once at a ragged shape of `problem`'s head_dim and mask, against float64."""
    import torch

    ragged = AttentionProblem(
        CHECK_BATCH,
        CHECK_HEADS,
        CHECK_SEQ_Q,
        CHECK_SEQ_KV,
        problem.head_dim,
        causal=problem.causal,
    )
    tensors = _attention_tensors(ragged, 3)
    OurKernel(ragged, config, ARCH, tensors)()
    torch.cuda.synchronize()
    return _check(ragged, tensors)


def sweep(flush: Any) -> list[dict[str, Any]]:
    """One row per shape: each configuration's TFLOP/s (or why it was not timed) and SDPA's."""
    from device_tuning import _sdpa

    rows = []
    for problem in SHAPES:
        tensors = _attention_tensors(problem, 1)
        row: dict[str, Any] = {"problem": problem.shape_str(), "causal": problem.causal}
        timed: dict[str, Any] = {}
        for config in configs(problem):
            try:
                check = _checked(problem, config)
                if not check["passed"]:
                    timed[str(config)] = f"wrong: rel err {check['rel_err']:.2e}"
                    continue
                kernel = OurKernel(problem, config, ARCH, tensors)
                timed[str(config)] = _tflops(problem, _median_ms(kernel, flush))
            except Exception as exc:
                timed[str(config)] = f"{type(exc).__name__}: {exc}"[:160]
        row["ours"] = timed
        for name, backend in (("sdpa_flash", "FLASH_ATTENTION"), ("sdpa_cudnn", "CUDNN_ATTENTION")):
            try:
                row[name] = _tflops(problem, _median_ms(_sdpa(problem, tensors, backend), flush))
            except Exception as exc:
                row[name] = f"{type(exc).__name__}"
        rows.append(row)
    return rows


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The sweep as a markdown table: a column per configuration, the best against cuDNN."""
    if not rows:
        return []
    names: list[str] = []
    for row in rows:
        names += [name for name in row["ours"] if name not in names]

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = [
        "",
        "## attention_sm90 configurations beside SDPA (fp16, TFLOP/s; the first is the default)",
        "",
        "| shape | causal | " + " | ".join(names) + " | SDPA flash | SDPA cuDNN | best / cuDNN |",
        "|" + "---|" * (len(names) + 5),
    ]
    for row in rows:
        ours = [row["ours"].get(name) for name in names]
        measured = [v for v in ours if isinstance(v, float)]
        cudnn = row.get("sdpa_cudnn")
        ratio = f"{max(measured) / cudnn:.2f}" if measured and isinstance(cudnn, float) else None
        cells = [cell(v) for v in (*ours, row.get("sdpa_flash"), cudnn, ratio)]
        lines.append(f"| {row['problem']} | {row['causal']} | " + " | ".join(cells) + " |")
    return lines
