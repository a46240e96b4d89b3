"""The shared conformance suite: every registered component and re-ranker obeys the
protocol of :mod:`recscope.models.base`.

Components of other packages join by defining ``test_params`` (a dict of small, fast
parameters) on their class; registered components without it are reported as skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recscope.data import Interactions, RankedLists
from recscope.errors import ConfigError
from recscope.models import REGISTRY, Component, NotFittedError, Stage, get_component
from recscope.models.base import load_builtin
from tests.models.cases import APPROXIMATE, COMPONENTS, RERANKED, RERANKERS
from tests.models.conftest import small_log

load_builtin()
_COVERED = {name for _, name, _ in COMPONENTS} | {name for _, name, _ in RERANKERS}
EXTERNAL = [(f"{name}-external", name, getattr(cls, "test_params", None))
            for name, cls in sorted(REGISTRY.items()) if name not in _COVERED]
ALL = COMPONENTS + EXTERNAL
K = 12


def _make(name: str, params: dict[str, Any] | None) -> Component:
    if params is None:
        pytest.skip(f"{name} defines no test_params for the conformance suite")
    return get_component(name)(params)


@pytest.fixture(scope="module", params=ALL, ids=[c[0] for c in ALL])
def fitted(request: pytest.FixtureRequest, train: Interactions) -> tuple[str, Component]:
    case, name, params = request.param
    return case, _make(name, params).fit(train)


def _warm_users(train: Interactions) -> np.ndarray:
    return np.unique(train.user_index).astype(np.int32)


def _valid_lists(rl: RankedLists, n_items: int) -> None:
    items = rl.items
    assert items.dtype == np.int32 and rl.scores.dtype == np.float32
    assert ((items >= -1) & (items < n_items)).all()
    for row, scores in zip(items, rl.scores, strict=True):
        real = row[row >= 0]
        assert len(set(real.tolist())) == len(real), "duplicate item in a list"
        n = len(real)
        assert (row[:n] >= 0).all() and (row[n:] == -1).all(), "pads must come last"
        assert np.isneginf(scores[n:]).all()


def test_recommend_returns_valid_ranked_lists(fitted: tuple[str, Component],
                                              train: Interactions) -> None:
    case, model = fitted
    users = _warm_users(train)
    rl = model.recommend(users, K)
    assert rl.items.shape == (len(users), K)
    np.testing.assert_array_equal(rl.users, users)
    _valid_lists(rl, train.n_items)
    assert (rl.lengths() > 0).all()
    if case not in RERANKED:
        real = rl.lengths()
        for row, n in zip(rl.scores, real, strict=True):
            assert (np.diff(row[:n]) <= 1e-6).all(), "not sorted"


def test_seen_items_are_excluded(fitted: tuple[str, Component], train: Interactions) -> None:
    _, model = fitted
    users = _warm_users(train)
    rl = model.recommend(users, K)
    seen = train.to_csr()
    for u, row in zip(rl.users, rl.items, strict=True):
        assert not np.intersect1d(row[row >= 0], seen[u].indices).size


def test_custom_exclusion_matrix(fitted: tuple[str, Component], train: Interactions) -> None:
    import scipy.sparse as sp

    _, model = fitted
    users = _warm_users(train)[:5]
    first = model.recommend(users, 3)
    banned = sp.csr_matrix((np.ones(first.items.size), (np.repeat(users, 3),
                                                          first.items.ravel())),
                           shape=(train.n_users, train.n_items))
    again = model.recommend(users, 3, exclude=banned)
    for a, b in zip(first.items, again.items, strict=True):
        assert not np.intersect1d(a, b[b >= 0]).size


def test_score_agrees_with_recommend(fitted: tuple[str, Component], train: Interactions
                                     ) -> None:
    case, model = fitted
    users = _warm_users(train)[:10]
    rl = model.recommend(users, K)
    s = model.score(users, rl.items)
    assert s.shape == rl.items.shape
    assert np.isneginf(s[rl.items < 0]).all()
    if case in RERANKED:
        return
    real = rl.items >= 0
    tol = 1e-4 if case in APPROXIMATE else 1e-6
    np.testing.assert_allclose(s[real], rl.scores[real], rtol=tol, atol=tol)


def test_save_load_gives_identical_recommendations(fitted: tuple[str, Component],
                                                   train: Interactions, tmp_path: Path) -> None:
    _, model = fitted
    users = np.arange(train.n_users + 2, dtype=np.int32)  # cold users included
    before = model.recommend(users, K)
    model.save(tmp_path / "m")
    loaded = Component.load(tmp_path / "m")
    assert type(loaded) is type(model)
    assert loaded.version == model.version
    after = loaded.recommend(users, K)
    np.testing.assert_array_equal(after.items, before.items)
    np.testing.assert_array_equal(after.scores, before.scores)
    for name, trace in before.traces.items():
        np.testing.assert_array_equal(after.traces[name], trace)


def test_fit_is_deterministic(fitted: tuple[str, Component], train: Interactions) -> None:
    _, model = fitted
    again = type(model)(model.config).fit(train)
    users = _warm_users(train)
    np.testing.assert_array_equal(again.recommend(users, K).items,
                                  model.recommend(users, K).items)


def test_cold_start_users_and_items(fitted: tuple[str, Component], train: Interactions
                                    ) -> None:
    case, model = fitted
    cold_item = int(np.flatnonzero(np.bincount(train.item_index,
                                               minlength=train.n_items) == 0)[0])
    no_history = int(np.flatnonzero(np.bincount(train.user_index,
                                                minlength=train.n_users) == 0)[0])
    users = np.array([no_history, train.n_users, train.n_users + 5], dtype=np.int32)
    rl = model.recommend(users, K)
    _valid_lists(rl, train.n_items)
    assert (rl.lengths() == K).all()
    assert not (rl.items == cold_item).any(), "an item without training data was recommended"
    if case == "pipeline":  # exploration slots differ; the ranking stage does not
        ranking = rl.traces["ranking"]
        assert (ranking == ranking[0]).all()
    elif case != "random":
        # the documented fallback: training popularity, identical for every cold user
        assert (rl.items == rl.items[0]).all()
    warm = model.recommend(_warm_users(train)[:5], K)
    assert not (warm.items == cold_item).any()


def test_version_tracks_config_and_data(fitted: tuple[str, Component], train: Interactions
                                        ) -> None:
    _, model = fitted
    assert len(model.version) == 12
    unfitted = type(model)(model.config)
    assert unfitted.version != model.version
    assert type(model)(model.config).fit(small_log(seed=1)).version != model.version
    other = dict(model.config.model_dump(), seed=model.config.seed + 1)
    assert type(model)(other).version != unfitted.version


@pytest.mark.parametrize("case", ALL, ids=[c[0] for c in ALL])
def test_unfitted_and_bad_config(case: tuple[str, str, dict[str, Any] | None]) -> None:
    _, name, params = case
    model = _make(name, params)
    with pytest.raises(NotFittedError):
        model.recommend(np.array([0]), 3)
    with pytest.raises(ConfigError) as err:
        get_component(name)({**(params or {}), "no_such_parameter": 1})
    assert err.value.key == "no_such_parameter"


# ---------------------------------------------------------------------- re-rankers
@pytest.fixture(scope="module")
def base_lists(train: Interactions) -> RankedLists:
    users = np.r_[_warm_users(train), train.n_users + 1].astype(np.int32)
    return get_component("itemknn")().fit(train).recommend(users, 30)


@pytest.fixture(scope="module", params=RERANKERS, ids=[c[0] for c in RERANKERS])
def reranker(request: pytest.FixtureRequest, train: Interactions) -> Stage:
    _, name, params = request.param
    return get_component(name)(params).fit(train)


def test_rerank_picks_from_the_input(reranker: Stage, base_lists: RankedLists) -> None:
    out = reranker.rerank(base_lists, K)
    assert out.items.shape == (len(base_lists), K)
    np.testing.assert_array_equal(out.users, base_lists.users)
    for src, row in zip(base_lists.items, out.items, strict=True):
        real = row[row >= 0]
        assert len(set(real.tolist())) == len(real)
        assert np.isin(real, src).all()
        assert (row[len(real):] == -1).all()


def test_rerank_save_load_and_determinism(reranker: Stage, base_lists: RankedLists,
                                          train: Interactions, tmp_path: Path) -> None:
    before = reranker.rerank(base_lists, K)
    reranker.save(tmp_path / "r")
    loaded = Stage.load(tmp_path / "r")
    assert loaded.version == reranker.version
    np.testing.assert_array_equal(loaded.rerank(base_lists, K).items, before.items)
    again = type(reranker)(reranker.config).fit(train)
    np.testing.assert_array_equal(again.rerank(base_lists, K).items, before.items)


@pytest.mark.parametrize("case", RERANKERS, ids=[c[0] for c in RERANKERS])
def test_reranker_bad_config(case: tuple[str, str, dict[str, Any]]) -> None:
    _, name, params = case
    with pytest.raises(ConfigError) as err:
        get_component(name)({**params, "bogus": True})
    assert err.value.key == "bogus"
    with pytest.raises(NotFittedError):
        get_component(name)(params).rerank(RankedLists(np.zeros(1), np.zeros((1, 2)),
                                                       np.zeros((1, 2))), 2)
