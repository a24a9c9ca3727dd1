"""FlashAttention-3-style forward attention for Hopper (sm_90a): TMA, wgmma, ping-pong."""
