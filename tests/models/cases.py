"""Every component the conformance suite runs, with small, fast parameters."""

from __future__ import annotations

from typing import Any

import recscope.pipeline  # noqa: F401  (the pipeline layer registers the "pipeline" component)

_BPR = {"component": "bpr", "params": {"factors": 8, "iterations": 3}}
_SMALL_MEMBERS = [{"component": "popularity", "quota": 10},
                  {"component": "itemknn", "quota": 10, "params": {"neighbors": 10}}]

#: (case id, registered name, params)
COMPONENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("popularity", "popularity", {}),
    ("popularity-surface", "popularity", {"surface": "home"}),
    ("popularity-decay-users", "popularity", {"half_life_days": 30.0, "count": "users"}),
    ("random", "random", {"seed": 3}),
    ("itemknn-cosine", "itemknn", {"neighbors": 10, "shrink": 5.0}),
    ("itemknn-asymmetric", "itemknn", {"similarity": "asymmetric", "alpha": 0.3,
                                       "block_bytes": 2**20}),
    ("ease", "ease", {"l2": 50.0}),
    ("als", "als", {"factors": 8, "iterations": 3}),
    ("bpr-native", "bpr", {"factors": 8, "iterations": 3}),
    ("bpr-implicit", "bpr", {"factors": 8, "iterations": 3, "backend": "implicit"}),
    ("ann-flat", "ann", {"source": _BPR, "recall_k": 10}),
    ("ann-ivf", "ann", {"source": _BPR, "index": "ivf", "nlist": 4, "nprobe": 2,
                        "recall_k": 10}),
    ("union", "union", {"members": _SMALL_MEMBERS}),
    ("lambdamart", "lambdamart", {"members": _SMALL_MEMBERS, "n_estimators": 10,
                                  "min_data_in_leaf": 5, "num_threads": 1}),
    ("lambdamart-init-binary", "lambdamart", {
        "members": _SMALL_MEMBERS, "n_estimators": 5, "min_data_in_leaf": 5,
        "num_threads": 1, "objective": "binary", "init_weight": 2.0, "monotone": False,
        "features": ["n_retrieved", "item_age_days"]}),
    ("pipeline", "pipeline", {
        "retrievers": _SMALL_MEMBERS,
        "ranker": {"component": "lambdamart",
                   "params": {"n_estimators": 10, "min_data_in_leaf": 5, "num_threads": 1}},
        "rerankers": [{"component": "mmr", "depth": 15}, {"component": "linucb"}]}),
]

#: Components whose ``recommend`` scores are not ``score`` values (re-ranked lists).
RERANKED = {"pipeline"}
#: Approximate search: scores agree with ``score`` up to float error only.
APPROXIMATE = {"ann-flat", "ann-ivf"}

RERANKERS: list[tuple[str, str, dict[str, Any]]] = [
    ("mmr-embedding", "mmr", {"dim": 4}),
    ("mmr-topic", "mmr", {"similarity": "topic", "lambda_": 0.3}),
    ("calibrated", "calibrated", {"lambda_": 0.7}),
    ("min-exposure-tail", "min_exposure", {"min_share": 0.5}),
    ("min-exposure-column", "min_exposure", {"column": "creator_id", "values": ["c1", "c2"],
                                             "min_share": 0.4}),
    ("rules", "rules", {"exclude_items": [3], "exclude_topics": ["t2"],
                        "boost_topics": {"t1": 0.3}, "max_per_creator": 2}),
    ("linucb", "linucb", {"slots": [1, 4], "dim": 4}),
    ("thompson", "thompson", {"slots": [0, 3], "dim": 4, "propensity_samples": 50}),
]
