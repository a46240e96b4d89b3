"""Small structured logs on which a working model must clearly beat chance."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recscope.data import Interactions

GROUP_WORDS = [("sofa", "lamp", "rug"), ("pasta", "soup", "garlic"),
               ("sneakers", "denim", "jacket"), ("tent", "trail", "kayak")]
DAY_US = 86_400 * 1_000_000


def grouped_log(n_users: int = 80, n_items: int = 48, n_groups: int = 4, per_user: int = 12,
                n_cold: int = 0, noise: float = 0.0, seed: int = 0) -> Interactions:
    """Users and items in ``n_groups`` groups; each user interacts with ``per_user`` items
    of their own group (a ``noise`` share of them from any group). The last ``n_cold``
    items of every group appear only in the item table, whose ``text`` names the group's
    words."""
    rng = np.random.default_rng(seed)
    item_group = np.arange(n_items) % n_groups
    warm = np.arange(n_items) < n_items - n_cold * n_groups
    rows_u, rows_i, rows_t = [], [], []
    for u in range(n_users):
        g = u % n_groups
        pool = np.flatnonzero((item_group == g) & warm)
        items = rng.choice(pool, size=min(per_user, len(pool)), replace=False)
        noisy = rng.random(len(items)) < noise
        items[noisy] = rng.choice(np.flatnonzero(warm), size=int(noisy.sum()))
        items = np.unique(items)
        rows_u += [u] * len(items)
        rows_i += items.tolist()
        rows_t += (1_700_000_000_000_000 + np.sort(rng.integers(0, 30 * DAY_US,
                                                                len(items)))).tolist()
    table = pa.table({"user_id": np.array(rows_u), "item_id": np.array(rows_i),
                      "timestamp": pa.array(np.array(rows_t), pa.timestamp("us", tz="UTC")),
                      "event": ["click"] * len(rows_u), "value": np.ones(len(rows_u))})
    words = [" ".join(rng.choice(GROUP_WORDS[g % len(GROUP_WORDS)], 2)) + f" item{i}"
             for i, g in enumerate(item_group)]
    feats = pa.table({"item_id": np.arange(n_items), "text": words,
                      "topic": [f"g{g}" for g in item_group]})
    return Interactions.from_table(table, item_features=feats)


def cycle_log(n_users: int = 60, n_items: int = 30, length: int = 20, seed: int = 0
              ) -> Interactions:
    """Every user walks the items in a fixed cycle (i -> i + 1 mod n) from a random start,
    one item a day: the next item is fully predictable from the last one."""
    rng = np.random.default_rng(seed)
    rows_u, rows_i, rows_t = [], [], []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        items = (start + np.arange(length)) % n_items
        rows_u += [u] * length
        rows_i += items.tolist()
        rows_t += (1_700_000_000_000_000 + np.arange(length) * DAY_US).tolist()
    table = pa.table({"user_id": np.array(rows_u), "item_id": np.array(rows_i),
                      "timestamp": pa.array(np.array(rows_t), pa.timestamp("us", tz="UTC")),
                      "event": ["click"] * len(rows_u), "value": np.ones(len(rows_u))})
    return Interactions.from_table(table)
