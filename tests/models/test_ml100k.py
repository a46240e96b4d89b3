"""Real-data regression check: ML-100K under the Microsoft Recommenders protocol.

The full table (BPR, the pipeline, intervals, paired tests) is produced by
``benchmarks/models.py ml100k``; here the fast components must land where that
benchmark measured them (seed 2026: EASE 0.476, ItemKNN 0.413, popularity 0.251).
"""

from __future__ import annotations

import numpy as np
import pytest

from recscope.data import Relevance, random_holdout
from recscope.models import get_component
from tests.conftest import data_path


@pytest.mark.data
def test_ml100k_ndcg_of_fast_components() -> None:
    from recscope.data.loaders import load
    from recscope.offline import evaluate

    data = load(data_path("ml-100k"), "movielens")
    split = random_holdout(data, 0.25, seed=2026)
    truth = Relevance.from_csr(split.test.to_csr())
    users = np.flatnonzero(truth.counts() > 0).astype(np.int32)
    expected = {"ease": ({"l2": 500.0}, 0.476), "itemknn": ({"neighbors": 50, "shrink": 50.0},
                                                             0.413),
                "popularity": ({}, 0.251)}
    for name, (params, ndcg) in expected.items():
        model = get_component(name)(params).fit(split.train)
        res = evaluate(model.recommend(users, 10), truth, ["ndcg@10"], bootstrap=0)
        assert res.mean("ndcg@10") == pytest.approx(ndcg, abs=0.002), name
