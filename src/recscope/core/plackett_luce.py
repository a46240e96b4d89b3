"""Plackett–Luce position probabilities: one copy for the simulator and for OPE.

A Plackett–Luce ranking over items with log-weights ``z`` places item ``i`` first with
probability ``exp(z_i) / sum_j exp(z_j)`` and fills every later position the same way
among the items not yet placed. Two quantities are needed:

* :func:`conditional_log_probs`: for given slates, the log-probability of each placed item
  given the items above it (its product over positions is the whole-slate probability);
* :func:`position_marginals`: ``P(item i at position k)`` for every item and position
  (exact for positions 0 and 1, exact by enumeration of ordered prefixes when there are
  few, else Monte Carlo).

Log-weights of ``-inf`` mark items that cannot be placed (padding, unavailable items).
"""

from __future__ import annotations

import itertools

import numpy as np

_ENUMERATE_MAX = 20_000


def conditional_log_probs(log_w: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Log-probability of each slate position given the items above it.

    ``log_w`` (B, M): log-weights of each row's M candidates; ``pos`` (B, k): the candidate
    index placed at each position (-1 marks an empty position, after the filled ones).
    Returns (B, k) log-probabilities, 0 at empty positions.
    """
    b, m = log_w.shape
    rows = np.arange(b)[:, None]
    valid = pos >= 0
    safe = np.maximum(pos, 0)
    head = np.where(valid, log_w[rows, safe], -np.inf)
    unplaced = np.ones((b, m), dtype=bool)
    unplaced[np.broadcast_to(rows, pos.shape)[valid], pos[valid]] = False
    rest = np.logaddexp.reduce(np.where(unplaced, log_w, -np.inf), axis=1)
    # log of the weight not yet placed before each position
    tail = np.logaddexp(np.logaddexp.accumulate(head[:, ::-1], axis=1)[:, ::-1],
                        rest[:, None])
    return np.where(valid, head - np.where(valid, tail, 0.0), 0.0)


def position_marginals(logits: np.ndarray, len_list: int, n_sim: int,
                       rng: np.random.Generator) -> np.ndarray:
    """``out[b, i, k]`` = P(item ``i`` at position ``k``) under Plackett–Luce(``logits[b]``).

    Exact for positions 0 and 1; beyond, exact by enumerating every ordered prefix when
    there are at most 20,000 of them, else Monte Carlo over ``n_sim`` sampled rankings
    (standard error of an entry ``q``: ``sqrt(q (1 - q) / n_sim)``). Items with ``-inf``
    logits have probability 0 everywhere.
    """
    z = logits - np.max(logits, axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    m, a = p.shape
    out = np.zeros((m, a, len_list))
    out[:, :, 0] = p
    if len_list > 1:
        r = p / np.maximum(1.0 - p, 1e-15)
        p1 = p * (r.sum(axis=1, keepdims=True) - r)
        out[:, :, 1] = p1 / p1.sum(axis=1, keepdims=True)
    if len_list <= 2:
        return out
    n_prefix = 1
    for j in range(len_list):
        n_prefix *= a - j
    if n_prefix <= _ENUMERATE_MAX:
        pref = np.array(list(itertools.permutations(range(a), len_list)), dtype=np.int64)
        chunk = max(1, 4_000_000 // n_prefix)
        for start in range(0, m, chunk):
            pc = p[start:start + chunk]
            prob = np.ones((len(pc), n_prefix))
            left = np.ones((len(pc), n_prefix))
            for j in range(len_list):
                pj = pc[:, pref[:, j]]
                prob *= pj / np.maximum(left, 1e-300)
                left = left - pj
            for k in range(2, len_list):
                onehot = np.zeros((n_prefix, a))
                onehot[np.arange(n_prefix), pref[:, k]] = 1.0
                out[start:start + chunk, :, k] = prob @ onehot
        return out
    chunk = max(1, 2_000_000 // max(1, n_sim * a))
    for start in range(0, m, chunk):
        lg = logits[start:start + chunk]
        g = lg[:, None, :] + rng.gumbel(size=(len(lg), n_sim, a))
        ranks = np.argsort(-g, axis=2)[:, :, :len_list]
        for k in range(2, len_list):
            for i in range(len(lg)):
                placed = ranks[i, :, k]
                ok = np.isfinite(lg[i][placed])
                out[start + i, :, k] = np.bincount(placed[ok], minlength=a) / n_sim
    return out
