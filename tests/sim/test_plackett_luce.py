"""The one Plackett-Luce helper (recscope.core.plackett_luce) against direct formulas."""

from __future__ import annotations

import itertools

import numpy as np

from recscope.core.plackett_luce import conditional_log_probs, position_marginals


def _brute_marginals(w: np.ndarray, k: int) -> np.ndarray:
    """P(item i at position p) by summing over every ordered prefix of length k."""
    out = np.zeros((w.size, k))
    for perm in itertools.permutations(range(w.size), k):
        p, left = 1.0, w.sum()
        for j in perm:
            p *= w[j] / left
            left -= w[j]
        for pos, j in enumerate(perm):
            out[j, pos] += p
    return out


def test_position_marginals_exact_and_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6))
    exact = position_marginals(logits, 4, 10, rng)  # 6*5*4*3 prefixes: enumerated
    for r in range(3):
        np.testing.assert_allclose(exact[r], _brute_marginals(np.exp(logits[r]), 4),
                                   atol=1e-12)
    big = rng.normal(size=(2, 12))  # 95,040 ordered prefixes of 5: Monte Carlo
    mc = position_marginals(big, 5, 20_000, np.random.default_rng(1))
    want = np.stack([_brute_marginals(np.exp(b), 5) for b in big])
    se = np.sqrt(want * (1 - want) / 20_000)
    assert (np.abs(mc - want) <= 5 * se + 1e-12).all()
    np.testing.assert_allclose(mc[:, :, :2], want[:, :, :2], atol=1e-12)  # exact there
    # unavailable items (-inf) are never placed
    masked = big.copy()
    masked[:, 0] = -np.inf
    assert not position_marginals(masked, 5, 2_000, np.random.default_rng(2))[:, 0].any()


def test_conditional_log_probs_match_sequential_choice() -> None:
    log_w = np.log(np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 1.0, 1.0, 0.001]]))
    pos = np.array([[3, 0, -1], [1, 2, 0]])
    got = np.exp(conditional_log_probs(log_w, pos))
    np.testing.assert_allclose(got[0], [4 / 10, 1 / 6, 1.0])  # empty position: log p = 0
    w = np.exp(log_w[1])
    np.testing.assert_allclose(got[1], [w[1] / w.sum(), w[2] / (w.sum() - w[1]),
                                        w[0] / (w.sum() - w[1] - w[2])])
