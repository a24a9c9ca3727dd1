"""gemm for sm_90a: TMA, wgmma and warp specialization (templates/gemm_sm90/gemm_sm90.cu.j2)."""
