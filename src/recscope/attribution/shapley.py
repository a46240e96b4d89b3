"""Shapley decomposition of a full-stack effect over K components.

With K components switched on or off independently (a 2^K factorial), the value of a
coalition S is the mean outcome of the cell where exactly the components in S are on.
Component k's Shapley value is its average marginal contribution over all orders:

    phi_k = sum_{S ⊆ N∖{k}} |S|! (K − |S| − 1)! / K! · (v(S ∪ {k}) − v(S)).

Shapley values are linear in the cell values and add up to the total effect
v(N) − v(∅) (efficiency), which is what makes them the natural split of a joint launch.
"""

from __future__ import annotations

from itertools import combinations
from math import factorial

import numpy as np


def cell_index(on: tuple[int, ...] | frozenset[int]) -> int:
    """Bit mask of a coalition: bit k set when component k is on."""
    return sum(1 << k for k in on)


def shapley_weights(k: int) -> np.ndarray:
    """Matrix W [K, 2^K] with phi = W @ v for the vector v of cell values indexed by bit mask."""
    w = np.zeros((k, 1 << k))
    players = range(k)
    for j in players:
        others = [p for p in players if p != j]
        for size in range(k):
            coef = factorial(size) * factorial(k - size - 1) / factorial(k)
            for subset in combinations(others, size):
                s = cell_index(subset)
                w[j, s | (1 << j)] += coef
                w[j, s] -= coef
    return w


def total_weights(k: int) -> np.ndarray:
    """Vector t with total effect = t @ v (all on minus all off)."""
    t = np.zeros(1 << k)
    t[(1 << k) - 1] = 1.0
    t[0] = -1.0
    return t


def interaction_weights(k: int) -> dict[tuple[int, ...], np.ndarray]:
    """Contrasts of the saturated 0/1 (treatment-coded) factorial model.

    For each non-empty set A of components, the coefficient of prod_{a in A} z_a equals
    sum_{S ⊆ A} (−1)^{|A|−|S|} v(S) (cells with every component outside A off). Singletons
    are main effects (effect of k with all others off); larger sets are interactions.
    """
    out: dict[tuple[int, ...], np.ndarray] = {}
    for size in range(1, k + 1):
        for a in combinations(range(k), size):
            c = np.zeros(1 << k)
            for sub_size in range(size + 1):
                for sub in combinations(a, sub_size):
                    c[cell_index(sub)] += (-1) ** (size - sub_size)
            out[a] = c
    return out
