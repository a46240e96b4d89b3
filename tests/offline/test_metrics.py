"""Exact metrics: agreement with ranx and pytrec_eval, conventions, properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recscope.data import RankedLists, Relevance
from recscope.errors import ConfigError, DataValidationError
from recscope.offline import evaluate, parse_metric
from recscope.offline.evaluate import MissingUsersWarning
from tests.offline.peers import as_dicts, random_case

# (recscope, pytrec_eval measure, ranx metric); None where the peer has no such measure
PAIRS = [
    ("precision@10", "P_10", "precision@10"),
    ("precision@5", "P_5", "precision@5"),
    ("recall@10", "recall_10", "recall@10"),
    ("recall@20", "recall_20", "recall@20"),
    ("ndcg@10", "ndcg_cut_10", "ndcg@10"),
    ("ndcg@20", "ndcg_cut_20", "ndcg@20"),
    ("map@20", "map_cut_20", "map@20"),
    ("map", "map", "map"),
    ("ndcg", "ndcg", "ndcg"),
    ("mrr", "recip_rank", "mrr"),
    ("r_precision", "Rprec", "r-precision"),
    ("hit_rate@5", None, "hit_rate@5"),
    ("f1@10", None, "f1@10"),
    ("dcg@10", None, "dcg@10"),
    ("ndcg_exp@10", None, "ndcg_burges@10"),
    ("mrr@5", None, "mrr@5"),
]


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_pytrec_eval_and_ranx(seed: int, graded: bool) -> None:
    import pytrec_eval
    import ranx

    rankings, truth = random_case(seed, graded=graded)
    qrels, run = as_dicts(rankings, truth)
    res = evaluate(rankings, truth, [p[0] for p in PAIRS], bootstrap=0)
    trec = pytrec_eval.RelevanceEvaluator(qrels, {p[1] for p in PAIRS if p[1]}).evaluate(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranx_run = ranx.Run(run)
        ranx.evaluate(ranx.Qrels(qrels), ranx_run, [p[2] for p in PAIRS])
    users = [int(u[1:]) for u in qrels]
    assert res.n_users == len(users)
    for ours, trec_name, ranx_name in PAIRS:
        mine = res.values(ours)[users]
        if trec_name:
            theirs = np.array([trec[f"u{u}"][trec_name] for u in users])
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-9, err_msg=ours)
        theirs = np.array([ranx_run.scores[ranx_name][f"u{u}"] for u in users])
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-9, err_msg=ours)
        assert abs(res.mean(ours) - float(np.mean(mine))) < 1e-12


def test_auc_equals_sklearn_on_full_rankings() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    n_users, n_items = 40, 50
    scores = rng.random((n_users, n_items))
    order = np.argsort(-scores, axis=1)
    truth_m = rng.random((n_users, n_items)) < 0.2
    truth_m[:, 0] = True
    truth_m[:, 1] = False
    truth = Relevance.from_csr(truth_m.astype(float))
    # full lists: exact AUC
    full = RankedLists(np.arange(n_users), order, np.take_along_axis(scores, order, 1))
    res = evaluate(full, truth, ["auc"], bootstrap=0)
    expect = [roc_auc_score(truth_m[u], scores[u]) for u in range(n_users)]
    np.testing.assert_allclose(res.values("auc"), expect, atol=1e-12)
    # top-10 lists: unlisted items tie at the bottom (half credit)
    top = RankedLists(np.arange(n_users), order[:, :10], np.take_along_axis(scores, order, 1)[:, :10])
    res10 = evaluate(top, truth, ["auc"], bootstrap=0)
    tied = np.where(np.argsort(order, axis=1) < 10, scores, -1.0)
    expect10 = [roc_auc_score(truth_m[u], tied[u]) for u in range(n_users)]
    np.testing.assert_allclose(res10.values("auc"), expect10, atol=1e-12)


def test_conventions_short_lists_duplicates_and_exclusion() -> None:
    truth = Relevance.from_pairs(np.array([0, 0, 1]), np.array([1, 2, 3]), 3, 10)
    items = np.array([[1, 1, 2, -1], [5, 6, -1, -1], [1, 2, 3, 4]], dtype=np.int32)
    rl = RankedLists(np.array([0, 1, 2]), items, np.zeros(items.shape))
    res = evaluate(rl, truth, ["precision@4", "recall@4", "hit_rate@1", "map@4"], bootstrap=0)
    # user 0: the repeated item 1 counts once (rank 1); item 2 at rank 3; P@4 divides by 4
    assert res.values("precision@4")[0] == pytest.approx(2 / 4)
    assert res.values("map@4")[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert res.values("recall@4")[1] == 0.0
    # user 2 has no relevant items: not counted
    assert np.isnan(res.values("recall@4")[2])
    assert res.n_users == 2 and res.info["n_users_without_relevant"] == 1
    # exclusion: item 1 (seen) is dropped from user 0's list and truth, item 2 moves up
    seen = Relevance.from_pairs(np.array([0]), np.array([1]), 3, 10)
    ex = evaluate(rl, truth, ["precision@1", "recall@4", "mrr"], exclude=seen, bootstrap=0)
    assert ex.values("precision@1")[0] == 1.0
    assert ex.values("recall@4")[0] == 1.0
    assert ex.values("mrr")[0] == 1.0


def test_missing_user_policies() -> None:
    truth = Relevance.from_pairs(np.array([0, 1]), np.array([1, 2]), 2, 5)
    rl = RankedLists(np.array([0]), np.array([[1, 2]]), np.zeros((1, 2)))
    with pytest.warns(MissingUsersWarning):
        zero = evaluate(rl, truth, ["recall@2"], bootstrap=0)
    assert zero.mean("recall@2") == 0.5 and zero.n_users == 2
    skip = evaluate(rl, truth, ["recall@2"], bootstrap=0, missing="skip")
    assert skip.mean("recall@2") == 1.0 and skip.n_users == 1
    with pytest.raises(DataValidationError, match="no ranked list"):
        evaluate(rl, truth, ["recall@2"], missing="error")


def test_bad_metric_names_and_inputs() -> None:
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_metric("ndgc@10")
    with pytest.raises(ConfigError, match="cut-off"):
        parse_metric("ndcg@0")
    with pytest.raises(ConfigError, match="no cut-off"):
        parse_metric("auc@10")
    assert parse_metric("NDCG@10").label == "ndcg@10"
    assert parse_metric("P@5").label == "precision@5"
    truth = Relevance.from_pairs(np.array([0]), np.array([1]), 1, 5)
    rl = RankedLists(np.array([0, 0]), np.array([[1], [2]]), np.zeros((2, 1)))
    with pytest.raises(DataValidationError, match="more than one list"):
        evaluate(rl, truth, ["recall@1"])
    with pytest.raises(ConfigError, match="catalogue size"):
        evaluate(RankedLists(np.array([0]), np.array([[1]]), np.zeros((1, 1))),
                 Relevance(truth.indptr, truth.indices), ["auc"])


METRICS = ["precision@3", "recall@3", "ndcg@3", "map@3", "mrr", "hit_rate@3", "f1@3",
           "r_precision", "ndcg", "ndcg_exp@3", "auc"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[RankedLists, Relevance]:
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(2, 15))
    k = draw(st.integers(1, n_items))
    seed = draw(st.integers(0, 2**31))
    graded = draw(st.booleans())
    rng = np.random.default_rng(seed)
    items = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)]).astype(np.int32)
    pad = rng.random((n_users, k)) < 0.2
    items = np.where(np.cumsum(pad, axis=1) > 0, -1, items).astype(np.int32)
    m = (rng.random((n_users, n_items)) < 0.3) * (rng.integers(1, 4, (n_users, n_items))
                                                  if graded else 1)
    truth = Relevance.from_csr(m.astype(float), graded=graded)
    return RankedLists(np.arange(n_users), items, np.zeros(items.shape)), truth


@settings(max_examples=50, deadline=None)
@given(cases(), st.integers(0, 1000))
def test_properties_bounds_and_user_order(case: tuple[RankedLists, Relevance], seed: int) -> None:
    rl, truth = case
    res = evaluate(rl, truth, METRICS, bootstrap=0, n_items=truth.to_csr().shape[1])
    perm = np.random.default_rng(seed).permutation(len(rl))
    shuffled = RankedLists(rl.users[perm], rl.items[perm], rl.scores[perm])
    res2 = evaluate(shuffled, truth, METRICS, bootstrap=0, n_items=truth.to_csr().shape[1])
    for name in METRICS:
        v = res.values(name)
        v = v[~np.isnan(v)]
        assert np.all(v >= -1e-12) and np.all(v <= 1 + 1e-12), name
        assert (np.isnan(res.mean(name)) and np.isnan(res2.mean(name))) or \
            abs(res.mean(name) - res2.mean(name)) < 1e-12, name
        np.testing.assert_allclose(res2.values(name), res.values(name)[perm], atol=0)


@settings(max_examples=40, deadline=None)
@given(cases())
def test_perfect_ranking_scores_one(case: tuple[RankedLists, Relevance]) -> None:
    _, truth = case
    csr = truth.to_csr()
    n_items = csr.shape[1]
    dense = csr.toarray()
    # every item ranked, by grade (ties by index): an ideal ranking
    order = np.argsort(-dense + np.arange(n_items) * 1e-9, axis=1).astype(np.int32)
    rl = RankedLists(np.arange(truth.n_users), order, -np.sort(-dense, axis=1))
    res = evaluate(rl, truth, ["ndcg", "ndcg_exp@100", "map", "mrr", "r_precision", "auc",
                               "recall@100", "hit_rate@100"], bootstrap=0, n_items=n_items)
    for name in res.metrics:
        v = res.values(name)
        v = v[~np.isnan(v)]
        np.testing.assert_allclose(v, 1.0, atol=1e-12, err_msg=name)


def test_result_roundtrip_and_rendering(tmp_path: object) -> None:
    from recscope.offline import EvaluationResult

    rankings, truth = random_case(5)
    res = evaluate(rankings, truth, ["ndcg@10", "recall@5"], bootstrap=100)
    lo, hi = res.ci("ndcg@10")
    assert lo <= res.mean("NDCG@10") <= hi
    assert res.ci("ndcg@10", "normal")[0] < res.mean("ndcg@10")
    back = EvaluationResult.load(res.save(tmp_path / "r.json"))  # type: ignore[operator]
    assert back.summary == res.summary and back.n_users == res.n_users
    assert back.per_user.schema == res.per_user.schema
    for c in res.per_user.column_names:  # NaN marks users not counted
        np.testing.assert_array_equal(back.per_user.column(c).to_numpy(),
                                      res.per_user.column(c).to_numpy())
    assert "ndcg@10" in res.to_html() and res.as_dict()["recall@5"] == res.mean("recall@5")
    with pytest.raises(ConfigError, match="not evaluated"):
        res.mean("mrr")
