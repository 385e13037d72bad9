"""The noise ceiling's norm term: the organisers' (n3/3 + n2/2 + n1/1) / (n3 + n2 + n1), and beyond 3 trials."""

from __future__ import annotations

import numpy as np
import pytest

from nsd.noise_ceiling import noise_ceiling, norm_term


def test_norm_term_is_the_organisers_formula():
    repeats = np.array([3, 3, 3, 2, 2, 1, 3, 1, 2, 3])
    n1, n2, n3 = ((repeats == k).sum() for k in (1, 2, 3))
    assert norm_term(repeats) == pytest.approx((n3 / 3 + n2 / 2 + n1 / 1) / (n3 + n2 + n1), rel=1e-15)
    assert norm_term([1, 1]) == 1.0 and norm_term([4, 4]) == 0.25


def test_noise_ceiling_of_a_known_snr():
    # signal sd 1, noise sd 1, averages of 3 trials: noise variance 1/3, so 1 / (1 + 1/3) = 0.75 of the variance
    np.testing.assert_allclose(noise_ceiling(np.array([1.0, 0.0]), np.array([3, 3])), [0.75, 0.0], rtol=1e-7)


@pytest.mark.parametrize("repeats", [[], [0, 3]])
def test_bad_repeat_counts(repeats):
    with pytest.raises(ValueError, match="repeat counts must be >= 1 and non-empty"):
        norm_term(repeats)
