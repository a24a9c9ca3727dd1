"""Render kernel templates, compile them with NVRTC, read their resources, run and verify them."""
