"""The noise ceiling of averaged test responses from NSD's ncsnr, in the challenge's units (a fraction in [0, 1]).

NSD's ncsnr is the signal sd over the single-trial noise sd. An average of ``n`` trials keeps the signal and
divides the noise variance by ``n``, so the explainable fraction is ncsnr^2 / (ncsnr^2 + norm_term) with
norm_term = mean over the test images of 1 / (their trial count): the organisers' (n3/3 + n2/2 + n1/1) /
(n3 + n2 + n1) for counts up to 3, and any count beyond (Allen et al. 2022, NSD data manual).
"""

from __future__ import annotations

import numpy as np

__all__ = ["noise_ceiling", "norm_term"]


def norm_term(repeats: np.ndarray) -> float:
    """Mean of 1 / trials over the test images (1 for single trials)."""
    repeats = np.asarray(repeats, dtype=np.float64)
    if repeats.size == 0 or (repeats < 1).any():
        raise ValueError(f"repeat counts must be >= 1 and non-empty; got {repeats[:10].tolist()}")
    return float(np.mean(1.0 / repeats))


def noise_ceiling(ncsnr: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Per-vertex noise ceiling (float32 fraction) of test responses averaged over ``repeats`` trials per image."""
    ncsnr = np.asarray(ncsnr, dtype=np.float64)
    squared = ncsnr**2
    return (squared / (squared + norm_term(repeats))).astype(np.float32)
