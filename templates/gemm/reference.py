"""NumPy matrix product with a chosen accumulation dtype: tier 1 and the test oracle of gemm."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike, NDArray

DEFAULT_BLOCK_K = 1024  # reduction columns converted to accum_dtype at a time


def gemm_reference(
    a: NDArray, b: NDArray, *, accum_dtype: DTypeLike = np.float32, block_k: int = DEFAULT_BLOCK_K
) -> NDArray:
    """C = A @ B for A [M, K] and B [K, N] in any float dtype, accumulated in accum_dtype.

    Blocked over K so only block_k-wide slices are converted at a time. Returns C in accum_dtype.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes a{a.shape} b{b.shape} do not form a matrix product")
    accum = np.dtype(accum_dtype)
    c = np.zeros((a.shape[0], b.shape[1]), dtype=accum)
    for start in range(0, a.shape[1], block_k):
        stop = start + block_k
        c += a[:, start:stop].astype(accum) @ b[start:stop, :].astype(accum)
    return c
