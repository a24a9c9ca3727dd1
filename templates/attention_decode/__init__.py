"""Split-KV decoding against a paged KV cache (flash_attn_with_kvcache)."""
