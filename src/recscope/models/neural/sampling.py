"""Negative sampling shared by the neural components."""

from __future__ import annotations

import numpy as np


def sample_negatives(users: np.ndarray, positive_keys: np.ndarray, n_items: int,
                     rng: np.random.Generator, *, max_tries: int = 20) -> np.ndarray:
    """One uniformly drawn item per row of ``users`` that the user has not interacted with.

    ``positive_keys`` are the sorted ``user * n_items + item`` keys of the positives.
    Draws are repeated for collisions (up to ``max_tries`` rounds; users who have seen
    almost the whole catalogue may keep a positive after that).
    """
    users = np.asarray(users, dtype=np.int64)
    neg = rng.integers(0, n_items, size=len(users), dtype=np.int64)
    for _ in range(max_tries):
        hit = _contains(positive_keys, users * n_items + neg)
        if not hit.any():
            break
        neg[hit] = rng.integers(0, n_items, size=int(hit.sum()), dtype=np.int64)
    return neg


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return sorted_keys[pos] == keys
