"""The attention_fwd tile space: parameters, validity rules, exact shared memory, default tiles."""

from __future__ import annotations

from tessera_core.hardware import arch_spec, ceil_div
from tessera_core.space import (
    Constraint,
    Param,
    Space,
    grid_within_arch,
    smem_within_arch,
    threads_within_arch,
)
from tessera_core.types import DTYPE_BYTES, DTYPES, AttentionProblem, Problem, TileConfig

MMA_M = 16  # query rows of one mma.m16n8k16 row tile
MMA_K = 16  # reduction depth of one mma
MMA_N = 8  # columns of one mma accumulator tile
ROW_PAD_ELEMS = 8  # 16 bytes of padding per shared-memory row: ldmatrix rows hit distinct banks
MAX_HEAD_DIM = 256
HEAD_DIM_STEP = 8  # one 16-byte chunk: the copies move whole chunks; the mmas pad to MMA_K
Q_IN_REGS = "q_in_regs"  # option: 1 = Q's A fragments in registers, 0 = re-read from shared memory
# Per-thread register budgets of the fragments, measured with ptxas (NVRTC 13) at the boundary:
# ptxas spills past them. The peak (Q, O and S, one k-step of K, softmax state) must leave room
# for addresses and V fragments in the 255. Q staged from shared memory: head_dim 80 with 128x128
# tiles and 4 warps peaks at 256 and compiles to 255 registers without spilling on sm_80 and
# sm_90. Q held in registers leaves ptxas less to reorder: head_dim 80, 128x64, 4 warps peaks at
# 208 and spills 24 bytes on sm_80.
FRAGMENT_REGISTER_BUDGET = {0: 256, 1: 200}  # by q_in_regs
# Three stages copy the next tile during the softmax, next to all of S: head_dim 80, 128x128
# peaks at 256 and spills 32 (sm_90) and 104 (sm_80) bytes; head_dim 64's 240 does not.
LATE_REFILL_FRAGMENT_REGISTER_BUDGET = 240
# What stays live across the whole main loop (O, softmax state, and Q with q_in_regs=1): with two
# stages ptxas spills (loop-invariant indices and the running sums) past 104 registers on sm_90
# (head_dim 128, 32-row warps, q_in_regs=0: 76-132 bytes under NVRTC 13.0 and 13.5; head_dim 96,
# q_in_regs=1: 72). On sm_80-sm_89 16-row warps carry up to 136 without spills (head_dim 256,
# 64x32 and 32x32 tiles: 132), 32-row warps, whose S is twice as tall, only up to 128 (head_dim
# 128, 128x64, 4 warps: 136 carried, 32-40 bytes; head_dim 112's 120 compiles clean). Three
# stages issue the refill after the softmax, off the register peak: 136 compiles without spills
# on sm_80 and sm_90.
CARRIED_REGISTER_BUDGET = {"sm_80": 136, "sm_86": 136, "sm_89": 136, "sm_90": 104}
TALL_WARP_CARRIED_REGISTER_BUDGET = 128  # two stages, 32-row warps, sm_80-sm_89
ONE_STAGE_CARRIED_REGISTER_BUDGET = 104
LATE_REFILL_CARRIED_REGISTER_BUDGET = 136  # num_stages >= 3, every arch


def carried_register_budget(arch: str, config: TileConfig) -> int:
    """Registers per thread that may stay live across the main loop without ptxas spilling."""
    if config.num_stages == 1:
        return ONE_STAGE_CARRIED_REGISTER_BUDGET
    if config.num_stages >= 3:
        return LATE_REFILL_CARRIED_REGISTER_BUDGET
    budget = CARRIED_REGISTER_BUDGET[arch_spec(arch).arch.removesuffix("a")]  # sm_90a: sm_90
    if m_tiles_per_warp(config) > 1:
        budget = min(budget, TALL_WARP_CARRIED_REGISTER_BUDGET)
    return budget


def as_problem(problem: Problem) -> AttentionProblem:
    """`problem` as this family's AttentionProblem; TypeError for another family's."""
    if not isinstance(problem, AttentionProblem):
        raise TypeError(f"attention_fwd needs an AttentionProblem, got {type(problem).__name__}")
    return problem


def padded_head_dim(head_dim: int) -> int:
    """head_dim rounded up to the mma depth: the columns the kernel's mmas run over."""
    return ceil_div(head_dim, MMA_K) * MMA_K


def smem_row_elems(head_dim: int) -> int:
    """Elements per shared-memory row of a Q, K or V tile (padded head_dim plus padding)."""
    return padded_head_dim(head_dim) + ROW_PAD_ELEMS


def grid(problem: Problem, config: TileConfig) -> tuple[int, int, int]:
    """Launch grid: (query blocks, heads, batch)."""
    p = as_problem(problem)
    return (ceil_div(p.seq_q, config.block_m), p.heads, p.batch)


def smem_bytes(problem: Problem, config: TileConfig) -> int:
    """Dynamic shared memory of the template: one Q tile plus num_stages (K, V) tile pairs."""
    row_bytes = smem_row_elems(as_problem(problem).head_dim) * DTYPE_BYTES
    q_tile = config.block_m * row_bytes
    kv_stage = 2 * config.block_n * row_bytes
    return q_tile + config.num_stages * kv_stage


def m_tiles_per_warp(config: TileConfig) -> int:
    """16-row mma tiles each warp owns; warps split block_m along M."""
    return config.block_m // (MMA_M * config.num_warps)


def q_in_regs(config: TileConfig) -> bool:
    """Whether the kernel keeps Q's A fragments in registers (else re-reads them per k-step)."""
    return config.option(Q_IN_REGS, 1) == 1


def carried_registers(problem: Problem, config: TileConfig) -> int:
    """32-bit registers per thread live across the whole main loop: O, softmax state, Q if held."""
    p = as_problem(problem)
    d = padded_head_dim(p.head_dim)
    m_tiles = max(1, m_tiles_per_warp(config))
    q_regs = m_tiles * (d // MMA_K) * 4 if q_in_regs(config) else 0
    o_regs = m_tiles * (d // MMA_N) * 4
    softmax_regs = m_tiles * 2 * 2  # running max and sum of two rows per row tile
    return q_regs + o_regs + softmax_regs + variant_registers(p)


def variant_registers(problem: AttentionProblem) -> int:
    """Registers the variants keep live across the main loop (plain attention: 0): the window's
    first tile and last row, the softcap factor, the ALiBi slope. Their Params values stay in
    the constant bank. ptxas (NVRTC 13) at the boundary: head_dim 256 with every variant, 16-row
    warps and Q in shared memory, compiles without spills at 138 carried registers on sm_80
    (239 registers) and on sm_90 (244), so the 4 counted here keep it inside the budgets."""
    regs = 2 if problem.has_window else 0
    regs += 1 if problem.softcap > 0.0 else 0
    regs += 1 if problem.alibi != "none" else 0
    return regs


def fragment_registers(problem: Problem, config: TileConfig) -> int:
    """32-bit registers per thread at the fragments' peak, during S = Q K^T.

    The carried registers plus the S accumulators, one k-step of K fragments (ptxas loads a
    whole k-step ahead of its mmas) and, with q_in_regs=0, one k-step of Q's A fragments.
    """
    m_tiles = max(1, m_tiles_per_warp(config))
    q_step_regs = 0 if q_in_regs(config) else m_tiles * 4
    s_regs = m_tiles * (config.block_n // MMA_N) * 4
    k_regs = (config.block_n // MMA_N) * 2
    peak = carried_registers(problem, config) + q_step_regs + s_regs + k_regs
    return peak + variant_peak_registers(as_problem(problem))


# Registers the variants add at the peak, measured with ptxas (NVRTC 13) at the boundary. The
# softcap/ALiBi transform of S runs next to all of S (its row and column indices, tanh's
# temporaries): head_dim 64 with every variant, 32-row warps and 128-key tiles peaks at 246 by
# the count above and spills 96-120 bytes on sm_90. A padded head_dim (not a multiple of 16)
# predicates the copies' columns: head_dim 72 (80 padded), 128x128, 4 warps, one stage peaks at
# 256 and spills 16 (sm_80) to 52 (sm_90) bytes.
LOGITS_PEAK_REGISTERS = 16
PADDED_PEAK_REGISTERS = 4


def variant_peak_registers(problem: AttentionProblem) -> int:
    """Registers at the fragments' peak beyond the tiles' (plain, unpadded attention: 0)."""
    logits = problem.softcap > 0.0 or problem.alibi != "none"
    padded = problem.head_dim % MMA_K != 0
    return (LOGITS_PEAK_REGISTERS if logits else 0) + (PADDED_PEAK_REGISTERS if padded else 0)


def _head_dim(config: TileConfig, problem: Problem, arch: str) -> str | None:
    d = as_problem(problem).head_dim
    if d % HEAD_DIM_STEP or d > MAX_HEAD_DIM:
        return f"head_dim={d} must be a multiple of {HEAD_DIM_STEP} and at most {MAX_HEAD_DIM}"
    return None


def _dtype(config: TileConfig, problem: Problem, arch: str) -> str | None:
    dtype = as_problem(problem).dtype
    if dtype not in DTYPES:
        return f"dtype={dtype}: the mma.sync attention takes fp16 or bf16 (fp8: attention_sm90)"
    return None


def _block_k(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if config.block_k != MMA_K:
        return (
            f"block_k={config.block_k} must be {MMA_K}: Q*K^T runs one fully unrolled loop of "
            f"{MMA_K}-deep k-steps, so no other value changes the kernel"
        )
    return None


def _warps_tile_m(config: TileConfig, problem: Problem, arch: str) -> str | None:
    rows = MMA_M * config.num_warps
    if config.block_m % rows:
        return (
            f"block_m={config.block_m} must be a multiple of 16 rows x num_warps="
            f"{config.num_warps} = {rows} (each warp owns whole 16-row mma tiles)"
        )
    return None


def _block_n(config: TileConfig, problem: Problem, arch: str) -> str | None:
    if config.block_n % MMA_K:
        return f"block_n={config.block_n} must be a multiple of {MMA_K} (P*V reduction steps)"
    return None


def _registers(config: TileConfig, problem: Problem, arch: str) -> str | None:
    tile = (
        f"block_m={config.block_m}, block_n={config.block_n}, num_warps={config.num_warps}, "
        f"{Q_IN_REGS}={config.option(Q_IN_REGS, 1)}"
    )
    regs = fragment_registers(problem, config)
    peak_budget = FRAGMENT_REGISTER_BUDGET[int(q_in_regs(config))]
    if config.num_stages >= 3:
        peak_budget = min(peak_budget, LATE_REFILL_FRAGMENT_REGISTER_BUDGET)
    if regs > peak_budget:
        return (
            f"{tile}: fragments need {regs} registers per thread > {peak_budget} "
            f"(would spill); use {Q_IN_REGS}=0, more warps or smaller tiles"
        )
    carried = carried_registers(problem, config)
    budget = carried_register_budget(arch, config)
    if carried > budget:
        return (
            f"{tile}, num_stages={config.num_stages}: {carried} registers per thread live across "
            f"the main loop > {budget} on {arch} (would spill); use {Q_IN_REGS}=0, 3 stages, "
            "more warps or a smaller block_m"
        )
    return None


SPACE = Space(
    family="attention_fwd",
    params=(
        Param("block_m", (32, 64, 128)),
        Param("block_n", (32, 64, 128)),
        Param("block_k", (MMA_K,)),
        Param("num_warps", (2, 4, 8)),
        Param("num_stages", (1, 2, 3)),
        Param(Q_IN_REGS, (0, 1)),
    ),
    constraints=(
        Constraint("dtype", _dtype),
        Constraint("head_dim", _head_dim),
        Constraint("block_k_is_the_mma_depth", _block_k),
        Constraint("warps_tile_block_m", _warps_tile_m),
        Constraint("block_n_multiple_of_16", _block_n),
        Constraint("shared_memory", smem_within_arch(smem_bytes)),
        Constraint("threads", threads_within_arch),
        Constraint("grid", grid_within_arch(grid)),
        Constraint("registers", _registers),
    ),
)


def default_config(problem: Problem, arch: str) -> TileConfig:
    """FlashAttention-2's forward tiles where they fit this template's registers and shared memory.

    FA2 (flash_fwd_launch_template.h): head_dim 64 -> 128x128, head_dim 128 -> 128x64, 4 warps
    of 32 rows each, Q read from shared memory. ptxas spills the 128-wide O of 32-row warps
    with two stages, so head_dim above 96 takes three (the refill after the softmax). Falls
    back to the first valid configuration in a fixed preference order.
    """
    d = padded_head_dim(as_problem(problem).head_dim)

    def tile(block_m: int, block_n: int, num_warps: int, stages: int, q_regs: int) -> TileConfig:
        return TileConfig(block_m, block_n, MMA_K, num_warps, stages, ((Q_IN_REGS, q_regs),))

    if d <= 64:
        preferred = [tile(128, 128, 4, 2, 0)]
    elif d > 128:  # FA2's head_dim 256 tiles: 64 rows by 4 warps; narrower K/V where smem asks
        preferred = [tile(64, 64, 4, 2, 0), tile(64, 64, 4, 3, 0), tile(64, 32, 4, 3, 0)]
        preferred.append(tile(64, 32, 4, 2, 0))  # sm_86/sm_89's 99 KiB of shared memory
    else:
        preferred = [tile(128, 64, 4, 2, 0), tile(128, 64, 4, 3, 0), tile(128, 64, 8, 2, 1)]
    fallbacks = [tile(64, 64, 4, 2, 1), tile(64, 32, 4, 2, 1), tile(32, 32, 2, 1, 1)]
    # 16-row warps with Q in shared memory: where the variants' registers leave no other room.
    fallbacks += [tile(64, 64, 4, 2, 0), tile(64, 32, 4, 3, 0), tile(32, 32, 2, 2, 0)]
    return SPACE.first_valid(preferred + fallbacks, problem, arch)
