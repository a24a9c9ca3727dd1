"""The FlashAttention-2 attention backward family; for now its float64-accurate NumPy reference."""
