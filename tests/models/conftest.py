"""Small logs with item side tables shared by the model tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recscope.data import Interactions
from tests.conftest import make_log

N_ITEMS = 40


def item_table(n_items: int = N_ITEMS) -> pa.Table:
    """Topics t0..t3 and creators c0..c6 for item ids 0..n-1."""
    ids = np.arange(n_items)
    return pa.table({"item_id": ids, "topic": [f"t{i % 4}" for i in ids],
                     "creator_id": [f"c{i % 7}" for i in ids]})


def small_log(seed: int = 0, n_rows: int = 900) -> Interactions:
    """60 users, 40 items with topics and creators, surfaces, plus one user and one item
    that appear only in the side tables (cold)."""
    t = make_log(n_users=60, n_items=N_ITEMS - 1, n_rows=n_rows, seed=seed, extra=True)
    users = pa.table({"user_id": np.arange(61)})
    return Interactions.from_table(t, item_features=item_table(), user_features=users)


@pytest.fixture(scope="session")
def train() -> Interactions:
    return small_log()
