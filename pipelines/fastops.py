"""Small numba kernels for the CPU path (the GPU path uses torch)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, nogil=True, cache=True)
def lut_nhwc(x: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """out[b, h, w, c] = lut[c, x[b, h, w, c]] for uint8 x [B, H, W, 3]; one pass, threads over B*H."""
    B, H, W, C = x.shape
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        for w in range(W):
            for c in range(C):
                out[b, h, w, c] = lut[c, x[b, h, w, c]]
