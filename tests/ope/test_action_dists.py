"""Evaluation policies: ranking marginals, mixtures, policies rebuilt from another log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recscope.core.plackett_luce import position_marginals
from recscope.errors import ConfigError
from recscope.ope.action_dists import from_log, from_scores, uniform
from tests.ope.test_estimators import tiny


def test_plackett_luce_marginals_exact_vs_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7))
    exact = position_marginals(logits, 4, 0, rng)
    np.testing.assert_allclose(exact.sum(axis=1), 1.0, atol=1e-12)  # each position
    np.testing.assert_allclose(exact.sum(axis=2), np.minimum(1, exact.sum(axis=2)), atol=1e-12)
    g = logits[:, None, :] + rng.gumbel(size=(3, 100_000, 7))
    ranks = np.argsort(-g, axis=2)[:, :, :4]
    for k in range(4):
        mc = np.stack([np.bincount(ranks[i, :, k], minlength=7) / 100_000 for i in range(3)])
        np.testing.assert_allclose(exact[:, :, k], mc, atol=0.01)


def test_deterministic_epsilon_greedy_uniform() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.2]])
    det = from_scores(scores, np.zeros(2, np.int64)).action_dist(2)
    assert det.probs[0, 1, 0] == 1.0 and det.probs[0, 2, 1] == 1.0
    eg = from_scores(scores, np.zeros(2, np.int64), kind="epsilon-greedy",
                     epsilon=0.2).action_dist(2)
    assert eg.probs[0, 1, 0] == pytest.approx(0.8 + 0.2 / 4)
    assert eg.probs[0, 0, 0] == pytest.approx(0.05)
    sm = from_scores(scores, None, kind="softmax", temperature=1.0).action_dist(1)
    np.testing.assert_allclose(sm.probs[0, :, 0], np.exp(scores[0]) / np.exp(scores[0]).sum())
    with pytest.raises(ConfigError):
        from_scores(scores, kind="softmax", temperature=0.0)
    with pytest.raises(ConfigError):
        from_scores(scores, kind="bogus")  # type: ignore[arg-type]
    fb, _, _ = tiny()
    u = uniform(fb)
    np.testing.assert_allclose(u.logged(fb), 1 / 3)


def test_from_log_rebuilds_a_context_free_policy() -> None:
    """A time-varying context-free logger; its rebuilt policy matches its average."""
    from recscope.ope.feedback import LoggedFeedback

    rng = np.random.default_rng(1)
    n, a = 6000, 5
    t = np.sort(rng.integers(0, 10**9, n))
    p_early, p_late = np.array([0.4, 0.3, 0.2, 0.05, 0.05]), np.array([0.1, 0.2, 0.3, 0.2, 0.2])
    late = t > np.median(t)
    probs = np.where(late[:, None], p_late, p_early)
    act = (probs.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
    src = LoggedFeedback(np.zeros((n, 0)), act, np.zeros(n, np.int64),
                         rng.random(n), probs[np.arange(n), act], a, 1,
                         np.arange(a).astype(object), timestamp=t, source="src")
    target = LoggedFeedback(np.zeros((100, 0)), np.arange(100) % a, np.zeros(100, np.int64),
                            np.zeros(100), np.full(100, 0.2), a, 1,
                            np.arange(a).astype(object), timestamp=np.linspace(0, 10**9, 100))
    avg = from_log(src, target)  # harmonic mean of the size-biased logged propensities
    np.testing.assert_allclose(avg.probs[0, :, 0], (p_early + p_late) / 2, atol=0.01)
    assert avg.info["self_weight_mean"] == pytest.approx(1.0, abs=0.05)
    # the plain mean of the logged propensities is biased towards high-probability times
    plain = np.array([src.pscore[src.action == i].mean() for i in range(a)])
    assert abs(plain[3] - 0.125) > 0.02
    near = from_log(src, target, method="nearest")
    np.testing.assert_allclose(near.probs[-1, :, 0], p_late, atol=1e-12)
    np.testing.assert_allclose(near.probs[0, :, 0], p_early, atol=1e-12)
    freq = from_log(src, target, method="frequency")
    np.testing.assert_allclose(freq.probs[0, :, 0], (p_early + p_late) / 2, atol=0.03)
    with pytest.raises(ConfigError):
        from_log(src, target, method="magic")  # type: ignore[arg-type]


def test_saved_model_becomes_a_ranking_policy(tmp_path: Path) -> None:
    """A saved popularity model ranks every logged user's items by popularity."""
    from recscope.data.interactions import Interactions
    from recscope.models.base import Component
    from recscope.models.popularity import Popularity
    from recscope.ope.action_dists import from_scorer
    from recscope.ope.feedback import LoggedFeedback
    from tests.conftest import make_log

    data = Interactions.from_table(make_log(n_users=20, n_items=12, n_rows=400, extra=True))
    Popularity().fit(data).save(tmp_path / "pop")
    fb = LoggedFeedback.from_interactions(data)
    comp = Component.load(tmp_path / "pop")
    pol = from_scorer(comp, fb, n_items=comp.n_items, kind="epsilon-greedy", epsilon=0.3)
    dist = pol.action_dist(fb.len_list)
    counts = np.bincount(data.item_index, minlength=data.n_items)
    # users have seen items, but ``score`` ranks candidates without exclusion
    top = int(np.argmax(counts))
    assert dist.probs[0, top, 0] == pytest.approx(0.7 + 0.3 / data.n_items)
    np.testing.assert_allclose(dist.probs.sum(axis=1), 1.0)


def test_any_scorer_is_a_policy_without_models() -> None:
    """A plain object with ``score(users, items)`` (no recscope model) ranks the logged
    items; items beyond ``n_items`` never enter the greedy ranking; a wrong shape is named."""
    from recscope.data.interactions import Interactions
    from recscope.ope.action_dists import from_scorer
    from recscope.ope.feedback import LoggedFeedback
    from tests.conftest import make_log

    data = Interactions.from_table(make_log(n_users=20, n_items=12, n_rows=400, extra=True))
    fb = LoggedFeedback.from_interactions(data)
    ids = np.asarray(fb.item_ids, dtype=np.int64)

    class ByItemId:
        def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
            return items.astype(np.float64)  # the largest item id first

    dist = from_scorer(ByItemId(), fb).action_dist(fb.len_list)
    assert dist.probs[0, int(np.argmax(ids)), 0] == 1.0
    cut = int(np.sort(ids)[-2])  # the largest id is outside the scorer's catalogue
    dist = from_scorer(ByItemId(), fb, n_items=cut + 1).action_dist(fb.len_list)
    assert dist.probs[0, int(np.argmax(ids)), 0] == 0.0
    assert dist.probs[0, int(np.flatnonzero(ids == cut)[0]), 0] == 1.0

    class Wrong:
        def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
            return np.zeros(3)

    with pytest.raises(ConfigError, match="shape"):
        from_scorer(Wrong(), fb)
