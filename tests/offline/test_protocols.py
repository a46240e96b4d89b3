"""Debiased (IPS/SNIPS) metrics checked on Coat, and the sampled-negative protocol."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from recscope.data import RankedLists, Relevance
from recscope.errors import ConfigError, DataValidationError
from recscope.offline import evaluate
from recscope.offline.debiased import DebiasedResult, debiased_evaluate, pair_ranks
from recscope.offline.sampled import SampledMetricWarning, sampled_evaluate
from tests.conftest import data_path

METRICS = ["recall@5", "recall@10", "recall@30", "avg_dcg@30"]


def _relevant(part: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = part.column("value")  # type: ignore[attr-defined]
    keep = v >= 4
    u, i = part.user_index[keep], part.item_index[keep]  # type: ignore[attr-defined]
    p = part.column("propensity")[keep]  # type: ignore[attr-defined]
    order = np.lexsort((i, u))
    return u[order], i[order], p[order]


def test_coat_snips_recovers_the_random_exposure_metric(tmp_path: Path) -> None:
    """Ratings users chose (train) with propensities vs. ratings of uniformly random items
    (test): the SNIPS estimate from train lands near the test metric, the naive one far
    above it (popular items are over-observed and a popularity ranking looks too good)."""
    from recscope.data.loaders import load_coat

    folder = data_path("coat")
    train, test = load_coat(folder, "train"), load_coat(folder, "test")
    nu, ni = train.n_users, train.n_items
    seen = np.zeros((nu, ni))
    seen[train.user_index, train.item_index] = 1
    # leave-user-out popularity: no user's own ratings decide their ranking
    score = seen.sum(axis=0)[None, :] - seen + 1e-6 * np.random.default_rng(0).random((nu, ni))
    rl = RankedLists(np.arange(nu), np.argsort(-score, axis=1), -np.sort(-score, axis=1))
    u, i, p = _relevant(train)
    biased = debiased_evaluate(rl, Relevance.from_pairs(u, i, nu, ni), p, METRICS, n_boot=300)
    tu, ti, _ = _relevant(test)
    share = 16 / 300  # each user rated 16 uniformly random items of 300
    unbiased = debiased_evaluate(rl, Relevance.from_pairs(tu, ti, nu, ni),
                                 np.full(len(ti), share), METRICS, n_boot=300)
    for m in METRICS:
        target = unbiased.by_estimator()["naive"][m].estimate
        naive = biased.by_estimator()["naive"][m].estimate
        snips = biased.by_estimator()["snips"][m].estimate
        assert abs(snips - target) < 0.35 * abs(naive - target), m
        assert naive > unbiased.by_estimator()["naive"][m].ci_high, m  # naive is clearly biased
    # with uniform propensities SNIPS equals the naive mean
    assert unbiased.by_estimator()["snips"]["recall@10"].estimate == pytest.approx(
        unbiased.by_estimator()["naive"]["recall@10"].estimate)
    assert biased.info["effective_sample_size"] < biased.info["n_pairs"]
    back = DebiasedResult.load(biased.save(tmp_path / "d.json"))
    assert back.by_estimator()["snips"]["recall@10"].estimate == biased.by_estimator()["snips"]["recall@10"].estimate


def test_debiased_validation_and_ranks() -> None:
    rl = RankedLists(np.array([0, 1]), np.array([[3, 1, 2], [0, -1, -1]]), np.zeros((2, 3)))
    ranks = pair_ranks(rl, np.array([0, 0, 1, 1]), np.array([1, 0, 0, 2]))
    assert ranks.tolist() == [2, 0, 1, 0]
    obs = Relevance.from_pairs(np.array([0]), np.array([1]), 2, 4)
    with pytest.raises(DataValidationError, match="propensity"):
        debiased_evaluate(rl, obs, np.array([0.0]))
    with pytest.raises(DataValidationError, match="one per observed pair"):
        debiased_evaluate(rl, obs, np.array([0.5, 0.5]))
    with pytest.raises(ConfigError):
        debiased_evaluate(rl, obs, np.array([0.5]), ["ndcg@10"])


def test_sampled_metrics_warn_and_correction_recovers_full_ranking() -> None:
    """Held-out items at known full ranks: sampled HR@10 is inflated ~10x; the Krichene &
    Rendle corrected estimate is close to the exact full-ranking value."""
    rng = np.random.default_rng(0)
    n_users, n_items = 1500, 1000
    scores = rng.random((n_users, n_items))
    held = rng.integers(0, n_items, n_users)
    full_rank = np.minimum(rng.geometric(1 / 120, n_users), n_items)
    srt = -np.sort(-scores, axis=1)
    scores[np.arange(n_users), held] = srt[np.arange(n_users), full_rank - 1] + 1e-9
    truth = Relevance.from_pairs(np.arange(n_users), held, n_users, n_items)
    top = np.argsort(-scores, axis=1)[:, :100]
    exact = evaluate(RankedLists(np.arange(n_users), top, np.zeros(top.shape)), truth,
                     ["hit_rate@10", "ndcg@10"], bootstrap=0)
    with pytest.warns(SampledMetricWarning):
        res = sampled_evaluate(scores, truth, ["hit_rate@10", "ndcg@10"], n_negatives=100,
                               n_boot=200)
    for m in ("hit_rate@10", "ndcg@10"):
        truth_value = exact.mean(m)
        assert res.sampled[m].estimate > 5 * truth_value
        assert res.sampled[m].n == n_users and res.sampled[m]["protocol"] == "sampled"
        corrected = res.corrected[m]
        assert abs(corrected.estimate - truth_value) < 0.2 * truth_value + 0.005, m
    # a scoring function gives the same ranks as the matrix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampledMetricWarning)
        res_fn = sampled_evaluate(lambda u, i: scores[u, i], truth, ["hit_rate@10"],
                                  n_negatives=100, n_boot=0, correct=False)
        with pytest.raises(ConfigError, match="not available"):
            sampled_evaluate(scores, truth, ["map@10"])
    assert res_fn.sampled["hit_rate@10"].estimate == res.sampled["hit_rate@10"].estimate
    from recscope.offline import SampledResult

    back = SampledResult.from_dict(res.to_dict())
    assert back.corrected["ndcg@10"] == res.corrected["ndcg@10"] and back.n_pairs == res.n_pairs
    assert "Krichene" in res.to_html()
