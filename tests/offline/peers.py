"""Helpers to run ranx and pytrec_eval on the same random cases as recscope."""

from __future__ import annotations

import numpy as np

from recscope.data import RankedLists, Relevance


def random_case(seed: int, n_users: int = 60, n_items: int = 80, k: int = 30,
                graded: bool = False) -> tuple[RankedLists, Relevance]:
    """Random lists (distinct scores, some short lists) and truth (some users empty)."""
    rng = np.random.default_rng(seed)
    items = np.full((n_users, k), -1, dtype=np.int32)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    for u in range(n_users):
        length = int(rng.integers(1, k + 1)) if rng.random() < 0.3 else k
        items[u, :length] = rng.permutation(n_items)[:length]
        scores[u, :length] = np.sort(rng.random(length).astype(np.float32))[::-1] + \
            np.arange(length, 0, -1, dtype=np.float32)
    us, its, gs = [], [], []
    for u in range(n_users):
        n_rel = int(rng.integers(0, 15)) if rng.random() < 0.9 else 0
        chosen = rng.permutation(n_items)[:n_rel]
        us += [u] * n_rel
        its += chosen.tolist()
        gs += rng.integers(1, 4, n_rel).tolist()
    truth = Relevance.from_pairs(np.array(us, dtype=np.int64), np.array(its, dtype=np.int64),
                                 n_users, n_items,
                                 np.array(gs, dtype=np.float64) if graded else None)
    return RankedLists(np.arange(n_users), items, scores), truth


def as_dicts(rankings: RankedLists, truth: Relevance) -> tuple[dict, dict]:
    """(qrels, run) dictionaries keyed by string ids, for users with relevant items."""
    qrels: dict[str, dict[str, int]] = {}
    for u in range(truth.n_users):
        a, b = truth.indptr[u], truth.indptr[u + 1]
        if b > a:
            g = truth.grades[a:b] if truth.grades is not None else np.ones(b - a)
            qrels[f"u{u}"] = {f"i{i}": int(x) for i, x in zip(truth.indices[a:b], g, strict=True)}
    run: dict[str, dict[str, float]] = {}
    for row, u in enumerate(rankings.users):
        if f"u{u}" not in qrels:
            continue
        ok = rankings.items[row] >= 0
        run[f"u{u}"] = {f"i{i}": float(s) for i, s in
                        zip(rankings.items[row][ok], rankings.scores[row][ok], strict=True)}
    return qrels, run
