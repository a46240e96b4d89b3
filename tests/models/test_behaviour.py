"""Component-specific behaviour, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recscope.data import Interactions, RankedLists
from recscope.errors import ConfigError
from recscope.models import get_component
from recscope.models.base import top_k
from tests.models.conftest import small_log


def test_top_k_breaks_ties_by_lower_index_and_pads() -> None:
    s = np.array([[1.0, 3.0, 3.0, 3.0, -np.inf], [0.5, -np.inf, -np.inf, -np.inf, -np.inf]],
                 dtype=np.float32)
    idx, val = top_k(s, 3)
    np.testing.assert_array_equal(idx, [[1, 2, 3], [0, -1, -1]])
    assert np.isneginf(val[1, 1:]).all()
    idx, _ = top_k(s, 7)
    assert idx.shape == (2, 7) and (idx[0, 5:] == -1).all()


@pytest.mark.parametrize("seed", range(5))
def test_top_k_matches_a_full_stable_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 6, (40, 30)).astype(np.float32)  # many ties
    s[rng.random(s.shape) < 0.2] = -np.inf
    for k in (1, 5, 29, 30, 35):
        idx, val = top_k(s, k)
        for row, got, vals in zip(s, idx, val, strict=True):
            order = np.lexsort((np.arange(30), -row))[:k]
            want = np.where(np.isfinite(row[order]), order, -1)
            np.testing.assert_array_equal(got[: len(want)], want)
            np.testing.assert_array_equal(vals[: len(want)], row[order])


def test_popularity_counts_surfaces_and_decay(train: Interactions) -> None:
    pop = get_component("popularity")().fit(train)
    np.testing.assert_array_equal(pop.item_scores, np.bincount(train.item_index,
                                                               minlength=train.n_items))
    home = get_component("popularity")(surface="home").fit(train)
    mask = train.column("surface") == "home"
    np.testing.assert_array_equal(home.item_scores, np.bincount(
        train.item_index[mask], minlength=train.n_items))
    decay = get_component("popularity")(half_life_days=1.0).fit(train)
    ts = train.timestamps
    age = (ts.max() - ts) / 86_400e6
    expected = np.bincount(train.item_index, weights=0.5 ** age, minlength=train.n_items)
    np.testing.assert_allclose(decay.item_scores, expected, rtol=1e-5)
    with pytest.raises(ConfigError) as err:
        get_component("popularity")(surface="home").fit(
            Interactions.from_table(train.table.drop_columns(["surface"])))
    assert err.value.key == "surface"


def test_itemknn_matches_dense_cosine(train: Interactions) -> None:
    x = train.to_csr().toarray()
    co = x.T @ x
    norm = np.sqrt(np.diag(co))
    sim = co / (np.outer(norm, norm) + 5.0 + 1e-12)
    np.fill_diagonal(sim, 0.0)
    knn = get_component("itemknn")(shrink=5.0, neighbors=1000).fit(train)
    np.testing.assert_allclose(knn.similarity.toarray(), sim, rtol=1e-5, atol=1e-7)
    top = get_component("itemknn")(shrink=5.0, neighbors=3, block_bytes=2**20).fit(train)
    kept = (top.similarity.toarray() > 0).sum(axis=0)
    assert kept.max() <= 3
    users = np.arange(5)
    np.testing.assert_allclose(knn._score_all(users), x[users] @ sim, rtol=1e-4, atol=1e-6)


def test_ease_matches_closed_form(train: Interactions) -> None:
    x = train.to_csr().toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 30.0 * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    ease = get_component("ease")(l2=30.0).fit(train)
    np.testing.assert_allclose(ease.weights, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError) as err:
        get_component("ease")(max_items=5).fit(train)
    assert err.value.key == "max_items"


def _planted(seed: int = 0) -> tuple[Interactions, np.ndarray]:
    """Two user groups, each consuming only its own half of the catalogue."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 80, 3000)
    group = users % 2
    items = group * 30 + rng.integers(0, 30, 3000)
    t = pa.table({"user_id": users, "item_id": items,
                  "timestamp": pa.array(np.arange(3000) * 10**6, pa.timestamp("us", tz="UTC")),
                  "event": ["click"] * 3000, "value": np.ones(3000)})
    data = Interactions.from_table(t)
    return data, np.asarray(data.users.ids.to_numpy()) % 2


@pytest.mark.parametrize("name,params", [
    ("bpr", {"factors": 8, "iterations": 20, "learning_rate": 0.05}),
    ("als", {"factors": 8, "iterations": 5}), ("itemknn", {}), ("ease", {"l2": 10.0}),
])
def test_personalised_models_learn_planted_groups(name: str, params: dict) -> None:
    data, group = _planted()
    model = get_component(name)(params).fit(data)
    rl = model.recommend(np.arange(data.n_users), 5)
    item_group = np.asarray(data.items.ids.to_numpy()) // 30
    share = (item_group[rl.items] == group[:, None]).mean()
    assert share > 0.95, f"{name} recommended the other group's items ({share:.2f})"


def test_ann_reports_recall_and_ivf_is_approximate(train: Interactions) -> None:
    src = {"component": "als", "params": {"factors": 8, "iterations": 3}}
    flat = get_component("ann")(source=src, recall_k=10).fit(train)
    assert flat.index_kind() == "flat" and flat.index_report["recall_at_k"] == 1.0
    exact = flat.source.recommend(np.arange(20), 10)
    np.testing.assert_array_equal(flat.recommend(np.arange(20), 10).items, exact.items)
    ivf = get_component("ann")(source=src, index="ivf", nlist=8, nprobe=1, recall_k=10).fit(
        train)
    assert 0.0 < ivf.index_report["recall_at_k"] <= 1.0
    auto = get_component("ann")(source=src, exact_below=10).fit(train)
    assert auto.index_kind() == "ivf"
    with pytest.raises(ConfigError) as err:
        get_component("ann")(source={"component": "itemknn"}).fit(train)
    assert err.value.key == "source.component"


def test_union_quotas_and_deduplication(train: Interactions) -> None:
    members = [{"component": "popularity", "quota": 5},
               {"component": "itemknn", "quota": 4}, {"component": "random", "quota": 3}]
    union = get_component("union")(members=members).fit(train)
    cand = union.candidates(np.arange(30))
    assert cand.items.shape == (30, 12)
    for row, src in zip(cand.items, cand.source, strict=True):
        real = row >= 0
        assert len(set(row[real].tolist())) == real.sum()
        counts = np.bincount(src[real], minlength=3)
        assert (counts <= [5, 4, 3]).all()
    # the first member's quota is exactly its top-5
    pop = union.members[0].recommend(np.arange(30), 5).items
    np.testing.assert_array_equal(cand.items[:, :5], pop)
    assert (cand.member_ranks[:, :5, 0] == np.arange(1, 6)).all()
    assert get_component("union")(members=[{"component": "popularity"},
                                            {"component": "popularity"}]).names == [
        "popularity0", "popularity1"]
    with pytest.raises(ConfigError) as err:
        get_component("union")(members=[{"component": "popularity", "name": "a"},
                                        {"component": "itemknn", "name": "a"}])
    assert err.value.key == "members"


def test_lambdamart_learns_from_training_split_only(train: Interactions) -> None:
    members = [{"component": "popularity", "quota": 10}, {"component": "itemknn", "quota": 10}]
    ranker = get_component("lambdamart")(members=members, n_estimators=10,
                                         min_data_in_leaf=5, num_threads=1).fit(train)
    rep = ranker.train_report
    assert rep["positives"] > 0 and rep["groups"] > 0
    # every training row of the inner split is from the training data: groups are users
    # of `train`, and the serving retrievers saw the whole training split
    assert ranker.retriever.members[0].data_fingerprint == train.fingerprint()
    imp = ranker.feature_importance()
    assert set(imp) == set(ranker.feature_names) and sum(imp.values()) > 0
    rl = ranker.recommend(np.arange(10), 5)
    assert "retrieval" in rl.traces
    for row, cand in zip(rl.items, rl.traces["retrieval"], strict=True):
        assert np.isin(row[row >= 0], cand).all()


def test_monotone_ranker_keeps_a_single_retrievers_order(train: Interactions) -> None:
    members = [{"component": "itemknn", "quota": 15}]
    ranker = get_component("lambdamart")(members=members, features=[], n_estimators=20,
                                         min_data_in_leaf=5, num_threads=1).fit(train)
    assert ranker.feature_names == ["itemknn_scaled_score", "itemknn_rank"]
    users = np.arange(20)
    np.testing.assert_array_equal(ranker.recommend(users, 15).items,
                                  ranker.retriever.members[0].recommend(users, 15).items)


# ---------------------------------------------------------------------- re-rankers
@pytest.fixture(scope="module")
def lists(train: Interactions) -> RankedLists:
    return get_component("itemknn")().fit(train).recommend(np.arange(60), 30)


def _topics(train: Interactions) -> np.ndarray:
    from recscope.models.itemmeta import item_codes

    return item_codes(train, "topic")[0]


def test_mmr_extremes(train: Interactions, lists: RankedLists) -> None:
    same = get_component("mmr")(lambda_=1.0).fit(train).rerank(lists, 10)
    np.testing.assert_array_equal(same.items, lists.items[:, :10])
    diverse = get_component("mmr")(lambda_=0.0, similarity="topic").fit(train).rerank(lists, 4)
    topics = _topics(train)
    for row, src in zip(diverse.items, lists.items, strict=True):
        if len(set(topics[src[src >= 0]])) >= 4:
            assert len(set(topics[row])) == 4


def test_calibrated_moves_topic_mix_towards_history(train: Interactions,
                                                    lists: RankedLists) -> None:
    model = get_component("calibrated")(lambda_=0.99).fit(train)
    same = get_component("calibrated")(lambda_=0.0).fit(train).rerank(lists, 10)
    np.testing.assert_array_equal(same.items, lists.items[:, :10])
    out = model.rerank(lists, 10)
    topics = _topics(train)
    p = model.target(lists.users)

    @np.errstate(all="ignore")
    def kl(items: np.ndarray) -> float:
        q = np.array([np.bincount(topics[r[r >= 0]], minlength=4) / max(1, (r >= 0).sum())
                      for r in items])
        q = 0.99 * q + 0.01 * p
        return float(np.mean(np.sum(np.where(p > 0, p * np.log(p / q), 0), axis=1)))

    assert kl(out.items) < kl(lists.items[:, :10])


def test_min_exposure_guarantees_share(train: Interactions, lists: RankedLists) -> None:
    model = get_component("min_exposure")(min_share=0.6).fit(train)
    out = model.rerank(lists, 10)
    share = model.exposure_share(out)
    prot = model.protected
    feasible = np.array([prot[r[r >= 0]].sum() >= 10 for r in lists.items])
    assert (share[feasible] >= 0.6 - 1e-9).all()
    before = model.exposure_share(lists.truncate(10))
    assert share.mean() > before.mean()
    keep = get_component("min_exposure")(min_share=0.0).fit(train).rerank(lists, 10)
    np.testing.assert_array_equal(keep.items, lists.items[:, :10])


def test_business_rules(train: Interactions, lists: RankedLists) -> None:
    from recscope.models.itemmeta import item_codes

    rules = get_component("rules")(exclude_items=[5], exclude_topics=["t0"],
                                   max_per_creator=1).fit(train)
    out = rules.rerank(lists, 10)
    topics, names = item_codes(train, "topic")
    creators = item_codes(train, "creator_id")[0]
    five = int(train.items.index([5])[0])
    for row in out.items:
        real = row[row >= 0]
        assert five not in real and not (topics[real] == names.index("t0")).any()
        assert len(set(creators[real])) == len(real)
    boosted = get_component("rules")(boost_topics={"t3": 5.0}).fit(train).rerank(lists, 10)
    t3 = names.index("t3")
    assert (topics[boosted.items[:, 0]] == t3).mean() > (topics[lists.items[:, 0]] == t3).mean()
    with pytest.raises(ConfigError) as err:
        get_component("rules")(exclude_items=[12345]).fit(train)
    assert err.value.key == "exclude_items"


# ---------------------------------------------------------------------- bandits
def test_linucb_fills_slots_and_logs_propensities(train: Interactions,
                                                  lists: RankedLists) -> None:
    greedy = get_component("linucb")(slots=[1, 3], epsilon=0.0).fit(train)
    slate = greedy.fill(lists, 6)
    assert (slate.propensities == 1.0).all()
    fixed = slate.lists.items[:, [0, 2, 4, 5]]
    np.testing.assert_array_equal(fixed, lists.items[:, :4])  # ranker order elsewhere
    np.testing.assert_array_equal(slate.lists.items[:, [1, 3]], slate.chosen)
    explore = get_component("linucb")(slots=[0], epsilon=0.5).fit(train).fill(lists, 6)
    pool = lists.lengths() - 5  # slot 0 is filled after the 5 fixed positions
    p = explore.propensities[:, 0]
    assert (np.isclose(p, 0.5 + 0.5 / pool) | np.isclose(p, 0.5 / pool)).all()
    log = explore.to_table(train.users.ids, train.items.ids)
    assert log.column_names == ["user_id", "item_id", "position", "propensity"]
    assert log.num_rows == len(lists)


def test_bandit_update_learns_rewarded_feature(train: Interactions, lists: RankedLists
                                               ) -> None:
    bandit = get_component("linucb")(slots=[0, 1, 2], epsilon=1.0, seed=1).fit(train)
    for step in range(5):
        slate = bandit.fill(lists, 5, seed=step)
        pop = bandit.log_pop[np.maximum(slate.chosen, 0)]
        bandit.update(slate, (pop > np.median(pop)).astype(float))
    theta, _ = bandit.posterior()
    assert theta[2] > 0  # popularity is the rewarded context feature
    greedy = get_component("linucb")(slots=[0], epsilon=0.0, alpha=0.0).fit(train)
    greedy._set_state(bandit._state())
    chosen = greedy.fill(lists, 5).chosen[:, 0]
    rand = bandit.fill(lists, 5).chosen[:, 0]
    assert bandit.log_pop[chosen].mean() > bandit.log_pop[rand].mean()


def test_thompson_propensities_are_probabilities(train: Interactions,
                                                 lists: RankedLists) -> None:
    ts = get_component("thompson")(slots=[2], propensity_samples=200).fit(train)
    slate = ts.fill(lists, 5)
    p = slate.propensities[:, 0]
    assert ((p > 0) & (p <= 1)).all()
    # a near-certain posterior (popularity is what pays) picks one item almost always
    theta = np.zeros(ts.context_dim)
    theta[2] = 1.0
    ts.a_matrix = ts.a_matrix * 1e6
    ts.b_vector = ts.a_matrix @ theta
    sure = ts.fill(lists, 5)
    assert sure.propensities.mean() > p.mean()


def test_rerank_after_fit_on_other_vocabulary_is_safe(train: Interactions) -> None:
    small = small_log(seed=3)
    lists = RankedLists(np.arange(3), np.array([[0, 1, 2, 99]] * 3), np.ones((3, 4)))
    out = get_component("mmr")(dim=4).fit(small).rerank(lists, 4)
    assert not (out.items == 99).any()


@pytest.mark.parametrize("name,params", [
    ("thompson", {"slots": [0], "propensity_samples": 400, "v": 1.0}),
    ("linucb", {"slots": [0], "epsilon": 0.3}),
])
def test_logged_propensities_match_simulated_choice_frequencies(
        train: Interactions, lists: RankedLists, name: str, params: dict) -> None:
    """By simulation: how often each item is shown equals its logged propensity."""
    bandit = get_component(name)(params).fit(train)
    one = RankedLists(lists.users[:1], lists.items[:1, :6], lists.scores[:1, :6])
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(bandit.context_dim)
    bandit.b_vector = bandit.a_matrix @ theta * 0.3  # an informative, uncertain posterior
    runs = 600
    chosen = np.empty(runs, dtype=np.int64)
    logged = np.empty(runs)
    for s in range(runs):
        slate = bandit.fill(one, 1, seed=s)
        chosen[s], logged[s] = slate.chosen[0, 0], slate.propensities[0, 0]
    for item in np.unique(chosen):
        freq = (chosen == item).mean()
        assert abs(logged[chosen == item].mean() - freq) < 0.06, (item, freq)
