"""The FlashAttention-2-style forward attention family: template, space, parameters, reference."""
