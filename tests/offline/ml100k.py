"""ML-100K fixtures: a temporal split, a popularity and a random ranking as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_ml100k_case(root: Path, folder: Path, k: int = 100, seed: int = 0) -> dict[str, Path]:
    """Temporal 80/20 split of ML-100K; truth = test ratings >= 4 (grade = rating);
    popularity and random top-k lists over items unseen in training, as Parquet."""
    from recscope.data import temporal_split_fraction
    from recscope.data.loaders import load_movielens

    data = load_movielens(folder)
    split = temporal_split_fraction(data, test_fraction=0.2)
    train, test = split.train, split.test
    n_items = data.n_items
    seen = train.to_csr()
    pop = np.bincount(train.item_index, minlength=n_items).astype(np.float64)
    rating = test.column("value")
    keep = rating >= 4
    tu, ti = test.user_index[keep], test.item_index[keep]
    users = np.unique(tu)
    rng = np.random.default_rng(seed)
    rows_pop, rows_rand = [], []
    for u in users:
        mask = np.ones(n_items, dtype=bool)
        mask[seen.indices[seen.indptr[u]:seen.indptr[u + 1]]] = False
        cand = np.flatnonzero(mask)
        top = cand[np.argsort(-pop[cand], kind="stable")[:k]]
        rows_pop.append((np.full(len(top), u), top, pop[top]))
        rnd = rng.permutation(cand)[:k]
        rows_rand.append((np.full(len(rnd), u), rnd, np.arange(len(rnd), 0, -1.0)))
    uid, iid = data.users.ids, data.items.ids

    def table(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pa.Table:
        u = np.concatenate([r[0] for r in rows])
        i = np.concatenate([r[1] for r in rows])
        s = np.concatenate([r[2] for r in rows])
        return pa.table({"user_id": uid.take(pa.array(u)), "item_id": iid.take(pa.array(i)),
                         "score": s})

    paths = {"truth": root / "truth.parquet", "popularity": root / "popularity.parquet",
             "random": root / "random.parquet"}
    pq.write_table(pa.table({"user_id": uid.take(pa.array(tu)), "item_id": iid.take(pa.array(ti)),
                             "grade": rating[keep]}), paths["truth"])
    pq.write_table(table(rows_pop), paths["popularity"])
    pq.write_table(table(rows_rand), paths["random"])
    return paths
