"""How a family's main loop overlaps its work: its tensor instruction and who feeds the stages.

The cost model (autotune.cost_model) reads one LoopStructure per family. The mma.sync families
(attention_fwd, gemm) issue `mma.sync` (the arch's mma.sync ceiling, ArchSpec) and every warp
both loads (cp.async) and computes, meeting at a barrier each iteration. The sm_90a families
are warp-specialized as FlashAttention-3 and CUTLASS's Hopper GEMMs are: a producer warpgroup
issues TMA loads into a ring of stages guarded by mbarriers while consumer warpgroups issue
`wgmma` at the tensor cores' full rate, so loads, MMAs and the consumers' other work overlap
and no barrier stops the block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tessera_core.types import TileConfig

# Share of the non-bottleneck pipes' work a warp-specialized loop leaves exposed (divided by
# the warps per scheduler, as for the mma.sync loops): the wgmma.wait_group between k-steps
# and the consumers' accumulator bookkeeping; loads run in the producer, asynchronously. An
# assumption (no vendor figure), small because CUTLASS's warp-specialized GEMMs reach 80-85%
# of the H100 peak (hardware.md: an 8192^3 bf16 product at 790-800 of 989 TFLOP/s); the
# `overlap` calibration factor corrects it.
WARP_SPECIALIZED_EXPOSED_SHARE = 0.1
WARPGROUP_WARPS = 4


@dataclass(frozen=True)
class LoopStructure:
    """What the model needs to know about a family's main loop beyond its tiles."""

    wgmma: bool  # tensor instruction: wgmma (the full dense rate) or mma.sync (arch ceiling)
    producer_warps: int  # warps that only load (TMA); 0 when every warp loads and computes
    barriers_per_iteration: float | None  # None: the tile work's (bar.sync per iteration)
    exposed_share: float | None  # None: the arch's mma.sync EXPOSED_SHARE

    # The exposed share when the config's consumer warpgroups take turns (option pingpong=1):
    # one's softmax runs under the other's GEMMs. None: exposed_share regardless.
    pingpong_exposed_share: float | None = None

    def consumer_warps(self, num_warps: int) -> int:
        """The warps issuing tensor instructions."""
        return max(1, num_warps - self.producer_warps)

    def for_config(self, config: TileConfig) -> LoopStructure:
        """This structure as `config` runs it: ping-pong's share when it takes turns."""
        if self.pingpong_exposed_share is not None and config.option("pingpong", 0) == 1:
            return replace(self, exposed_share=self.pingpong_exposed_share)
        return self


MMA_SYNC = LoopStructure(
    wgmma=False, producer_warps=0, barriers_per_iteration=None, exposed_share=None
)
# One producer warpgroup; consumers wait on mbarriers (their latency is the pipeline depth's
# concern, not a bar.sync's), so no barrier a block-iteration.
WARP_SPECIALIZED = LoopStructure(
    wgmma=True,
    producer_warps=WARPGROUP_WARPS,
    barriers_per_iteration=0.0,
    exposed_share=WARP_SPECIALIZED_EXPOSED_SHARE,
)
# FlashAttention-3's forward: besides the GEMMs, every KV tile's softmax (exponentials on the
# MUFU, FP32 lane-ops) must hide under the tensor pipe. Within a warpgroup it overlaps the next
# S GEMM and the previous P V only in part; with ping-pong one warpgroup's softmax runs while
# the other's GEMMs do. Assumptions anchored on FlashAttention-3's ablation (hardware.md's
# table; Shah et al. 2024, d128 non-causal: about 570 TFLOP/s without ping-pong, 620-660
# with), corrected per arch by the `overlap` factor.
ATTENTION_EXPOSED_SHARE = 1.0
ATTENTION_PINGPONG_EXPOSED_SHARE = 0.6
ATTENTION_WARP_SPECIALIZED = replace(
    WARP_SPECIALIZED,
    exposed_share=ATTENTION_EXPOSED_SHARE,
    pingpong_exposed_share=ATTENTION_PINGPONG_EXPOSED_SHARE,
)
# A new sm_90a family adds one line here.
STRUCTURES: dict[str, LoopStructure] = {
    "gemm_sm90": WARP_SPECIALIZED,
    "attention_sm90": ATTENTION_WARP_SPECIALIZED,
}


def structure_of(family: str | None) -> LoopStructure:
    """The loop structure of the family named `family` (None or unknown: mma.sync)."""
    return STRUCTURES.get(family or "", MMA_SYNC)
