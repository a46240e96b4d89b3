"""Negative sampling shared by the neural components."""

from __future__ import annotations

import numpy as np


def sample_negatives(users: np.ndarray, positive_keys: np.ndarray, n_items: int,
                     rng: np.random.Generator, *, max_tries: int = 20) -> np.ndarray:
    """One uniformly drawn item per row of ``users`` that the user has not interacted with.

    ``positive_keys`` are the sorted ``user * n_items + item`` keys of the positives.
    Collisions are redrawn (``max_tries`` rounds), then the few rows left (users who have
    seen most of the catalogue) draw from their explicit complement; a user who has seen
    every item keeps a positive.
    """
    users = np.asarray(users, dtype=np.int64)
    neg = rng.integers(0, n_items, size=len(users), dtype=np.int64)
    for _ in range(max_tries):
        hit = _contains(positive_keys, users * n_items + neg)
        if not hit.any():
            return neg
        neg[hit] = rng.integers(0, n_items, size=int(hit.sum()), dtype=np.int64)
    for row in np.flatnonzero(_contains(positive_keys, users * n_items + neg)):
        u = users[row]
        lo, hi = np.searchsorted(positive_keys, [u * n_items, (u + 1) * n_items])
        free = np.setdiff1d(np.arange(n_items), positive_keys[lo:hi] - u * n_items,
                            assume_unique=True)
        if len(free):
            neg[row] = free[rng.integers(len(free))]
    return neg


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return sorted_keys[pos] == keys
