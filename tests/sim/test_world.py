"""The built-in world: determinism, schema and ranges, heavy tails, the logging policy's
propensities, engagement against the true model, position bias and text signal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from recscope.data import Interactions
from recscope.data.schema import CANONICAL_COLUMNS
from recscope.data.validate import validate_interactions
from recscope.errors import ConfigError, DataValidationError
from recscope.sim import SURFACES, World
from tests.sim.conftest import TINY


def _hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _col(world: World, name: str) -> np.ndarray:
    return world.interactions.table.column(name).to_numpy(zero_copy_only=False)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    World.generate(TINY).save(tmp_path / "a")
    World.generate(TINY).save(tmp_path / "b")
    World.generate(TINY.model_copy(update={"seed": 1})).save(tmp_path / "c")
    a, b, c = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert "interactions.parquet" in a and "truth_users.parquet" in a
    assert a == b
    assert a["interactions.parquet"] != c["interactions.parquet"]


def test_log_schema_and_ranges(world: World) -> None:
    table = world.interactions.table
    assert set(CANONICAL_COLUMNS) <= set(table.column_names)
    assert {"request_id", "propensity_cascade"} <= set(table.column_names)
    validate_interactions(table)  # the canonical validator accepts the log as it is
    event, surface, pos = _col(world, "event"), _col(world, "surface"), _col(world, "position")
    assert set(np.unique(event)) == {"impression", "click", "save", "hide"}
    n_imp = int((event == "impression").sum())
    cfg = world.config
    max_session = cfg.sessions.max_requests * max(cfg.surfaces.get(s).slate_size
                                                  for s in SURFACES)
    assert cfg.n_impressions <= n_imp < cfg.n_impressions + max_session
    for s in SURFACES:
        m = surface == s
        assert m.any()
        assert pos[m].min() == 0 and pos[m].max() == cfg.surfaces.get(s).slate_size - 1
    users, items = _col(world, "user_id"), _col(world, "item_id")
    assert users.min() >= 0 and users.max() < cfg.n_users
    assert items.min() >= 0 and items.max() < cfg.n_items
    assert (_col(world, "value") == 1.0).all()
    prop, casc = _col(world, "propensity"), _col(world, "propensity_cascade")
    assert ((prop > 0) & (prop <= 1)).all()
    assert ((casc > 0) & (casc <= prop * (1 + 1e-12))).all()
    # the policy never shows a pin before it was created
    ts = world.interactions.timestamps
    assert (world.truth.item_created_at[items] <= ts).all()
    # the side tables
    feats = world.interactions.item_features
    assert feats is not None and world.interactions.user_features is not None
    assert feats.column_names == ["item_id", "text", "topic", "creator_id", "quality",
                                  "created_at"]
    assert feats.num_rows == cfg.n_items
    names = np.array(world.truth.topic_names)
    assert (feats.column("topic").to_numpy(zero_copy_only=False)
            == names[world.truth.item_topic]).all()


def test_engagements_follow_their_impressions(world: World) -> None:
    event, req = _col(world, "event"), _col(world, "request_id")
    pos, items, ts = _col(world, "position"), _col(world, "item_id"), world.interactions.timestamps
    slot = req.astype(np.int64) * 1000 + pos
    imp = event == "impression"
    assert np.unique(slot[imp]).size == imp.sum()  # one impression per slot
    order = np.argsort(slot[imp])
    imp_slot, imp_item, imp_ts = slot[imp][order], items[imp][order], ts[imp][order]
    for e in ("click", "save", "hide"):
        m = event == e
        at = np.searchsorted(imp_slot, slot[m])
        assert (imp_slot[at] == slot[m]).all()
        assert (imp_item[at] == items[m]).all()
        assert (ts[m] > imp_ts[at]).all()
    clicks = set(slot[event == "click"].tolist())
    assert set(slot[event == "save"].tolist()) <= clicks
    assert not (set(slot[event == "hide"].tolist()) & clicks)
    # the request table agrees with the log
    n_per_req = np.bincount(req[imp], minlength=world.requests.num_rows)
    assert (n_per_req == world.requests.column("slate_size").to_numpy()).all()


def test_cascade_is_the_product_of_conditionals(world: World) -> None:
    table = world.interactions.table
    imp = table.filter(pc.equal(table.column("event"), "impression"))
    req, pos = imp.column("request_id").to_numpy(), imp.column("position").to_numpy()
    order = np.lexsort((pos, req))
    logp = np.log(imp.column("propensity").to_numpy()[order])
    casc = imp.column("propensity_cascade").to_numpy()[order]
    r = req[order]
    starts = np.r_[0, np.flatnonzero(np.diff(r)) + 1]
    cum = np.cumsum(logp)
    base = np.repeat(np.r_[0.0, cum[starts[1:] - 1]], np.diff(np.r_[starts, r.size]))
    np.testing.assert_allclose(np.exp(cum - base), casc, rtol=1e-9)


def test_logged_propensities_match_the_policy(world: World) -> None:
    """Recomputing every logged slate's probabilities from the policy gives the column."""
    _check_propensities(world, n_per_surface=400)


def _check_propensities(world: World, n_per_surface: int) -> None:
    table = world.interactions.table
    imp = table.filter(pc.equal(table.column("event"), "impression"))
    req_of = imp.column("request_id").to_numpy()
    pos = imp.column("position").to_numpy()
    items = imp.column("item_id").to_numpy()
    prop = imp.column("propensity").to_numpy()
    casc = imp.column("propensity_cascade").to_numpy()
    rq = world.requests
    surface = rq.column("surface").to_numpy(zero_copy_only=False)
    for s in SURFACES:
        ids = np.flatnonzero(surface == s)[:n_per_surface]
        k = world.config.surfaces.get(s).slate_size
        slates = np.full((ids.size, k), -1, dtype=np.int64)
        want_p = np.full((ids.size, k), np.nan)
        want_c = np.full((ids.size, k), np.nan)
        row = np.searchsorted(ids, req_of)
        m = np.isin(req_of, ids)
        slates[row[m], pos[m]] = items[m]
        want_p[row[m], pos[m]] = prop[m]
        want_c[row[m], pos[m]] = casc[m]
        pool, score = world.policy.candidates(
            rq.column("user_id").to_numpy()[ids], s,
            query_topic=rq.column("query_topic").to_numpy()[ids],
            seed_item=rq.column("seed_item").to_numpy()[ids])
        ts = rq.column("timestamp").cast("int64").to_numpy()[ids]
        got = world.policy.probabilities(pool, world.policy.log_weights(pool, score, ts), slates)
        np.testing.assert_allclose(got.propensity, want_p, rtol=1e-9)
        np.testing.assert_allclose(got.propensity_cascade, want_c, rtol=1e-9)


def test_plackett_luce_sampling_frequencies_match_propensities(world: World) -> None:
    """Empirical frequencies of the sampler agree with the exact probabilities."""
    pol = world.policy
    n = 20_000
    user = np.full(n, 3)
    pool, score = pol.candidates(user, "home_feed")
    ts = np.full(n, np.iinfo(np.int64).max // 2)
    log_w = pol.log_weights(pool, score, ts)
    slates = pol.sample(pool, log_w, 2, np.random.default_rng(7))
    # position 0: P(item) = w_i / sum w
    w = np.exp(log_w[0] - log_w[0].max())
    p0 = w / w.sum()
    freq0 = np.bincount(np.searchsorted(pool[0], slates.items[:, 0]), minlength=pool.shape[1]) / n
    big = p0 > 0.005
    z = (freq0[big] - p0[big]) / np.sqrt(p0[big] * (1 - p0[big]) / n)
    assert big.sum() >= 5 and np.abs(z).max() < 4.5
    # the logged conditional propensity equals the exact one, for every sampled row
    idx0 = np.searchsorted(pool[0], slates.items[:, 0])
    np.testing.assert_allclose(slates.propensity[:, 0], p0[idx0], rtol=1e-9)
    # position 1 given the most frequent top item
    top = np.argmax(freq0)
    rows = idx0 == top
    w1 = w.copy()
    w1[top] = 0.0
    p1 = w1 / w1.sum()
    idx1 = np.searchsorted(pool[0], slates.items[rows, 1])
    np.testing.assert_allclose(slates.propensity[rows, 1], p1[idx1], rtol=1e-9)
    f1 = np.bincount(idx1, minlength=pool.shape[1]) / rows.sum()
    j = np.argmax(p1)
    assert abs(f1[j] - p1[j]) < 4.5 * np.sqrt(p1[j] * (1 - p1[j]) / rows.sum())


def test_marginal_propensities_estimate(world: World) -> None:
    pol = world.policy
    pool, score = pol.candidates(np.array([5, 6]), "home_feed")
    log_w = pol.log_weights(pool, score, np.full(2, 2**60))
    marg = pol.marginal_propensities(pool, log_w, 4, 4000, np.random.default_rng(1))
    assert marg.shape == (2, pool.shape[1], 4)
    np.testing.assert_allclose(marg.sum(axis=1), 1.0)  # each position holds one item
    exact0 = np.exp(log_w - np.logaddexp.reduce(log_w, axis=1, keepdims=True))
    se = np.sqrt(exact0 * (1 - exact0) / 4000)
    assert (np.abs(marg[:, :, 0] - exact0) < 4.5 * se + 1e-12).all()
    assert (marg.sum(axis=2) <= 1.0 + 1e-12).all()


def test_probabilities_reject_impossible_slates(world: World) -> None:
    pol = world.policy
    pool, score = pol.candidates(np.array([0]), "home_feed")
    outside = np.setdiff1d(np.arange(world.config.n_items), pool[0])[0]
    with pytest.raises(ConfigError, match="not in the policy"):
        pol.probabilities(pool, pol.log_weights(pool, score, np.array([2**60])),
                          np.array([[outside]]))


def test_logged_engagement_matches_the_true_model(world: World) -> None:
    """Observed click/save/hide counts agree with the true probabilities of the logged
    impressions (sum of Bernoulli variables: within 4.5 standard deviations)."""
    p = world.logged_probabilities()
    table = world.interactions.table
    imp = table.filter(pc.equal(table.column("event"), "impression"))
    assert p.click.size == imp.num_rows
    event = _col(world, "event")
    for name in ("click", "save", "hide"):
        probs = getattr(p, name)
        expected, sd = probs.sum(), np.sqrt((probs * (1 - probs)).sum())
        observed = (event == name).sum()
        assert abs(observed - expected) < 4.5 * sd, (name, observed, expected, sd)
    assert ((p.save <= p.click) & (p.click <= p.examine) & (p.hide <= p.examine - p.click
                                                            + 1e-12)).all()


def test_ctr_decreases_with_position(world: World) -> None:
    d = world.describe()
    for s in SURFACES:
        ctr = np.array(d["surfaces"][s]["ctr_by_position"], dtype=float)
        assert ctr[:2].mean() > 2 * ctr[-2:].mean(), (s, ctr)
        rho = np.corrcoef(np.arange(ctr.size), np.argsort(np.argsort(ctr)))[0, 1]
        assert rho < -0.8, (s, ctr)
        exam = world.truth.examination(s, np.arange(ctr.size))
        assert exam[0] == 1.0 and (np.diff(exam) < 0).all()


def test_heavy_tails(world: World) -> None:
    d = world.describe()
    assert d["top1pct_user_share"] > 0.08  # 1% of users would hold 1% if uniform
    assert d["top1pct_item_share"] > 0.10
    t = world.truth
    # logged activity follows the true activity rates
    event, users = _col(world, "event"), _col(world, "user_id")
    per_user = np.bincount(users[event == "impression"], minlength=t.n_users)
    rank = np.corrcoef(np.argsort(np.argsort(t.user_activity)),
                       np.argsort(np.argsort(per_user)))[0, 1]
    assert rank > 0.5
    creator_items = np.bincount(t.item_creator, minlength=t.creator_topic.size)
    top = np.sort(creator_items)[::-1][: max(1, t.creator_topic.size // 10)]
    assert top.sum() / creator_items.sum() > 0.3  # top 10% of creators make > 30% of pins
    assert np.allclose(t.user_topics.sum(axis=1), 1.0)
    # sparse interests: a typical user puts 90% of their interest on at most 5 of 24 topics
    share = np.sort(t.user_topics, axis=1)[:, ::-1]
    assert np.median((np.cumsum(share, axis=1) < 0.9).sum(axis=1) + 1) <= 5
    assert np.median(share[:, 0]) > 0.35


def test_text_predicts_topic(world: World) -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.model_selection import cross_val_score
    from sklearn.naive_bayes import MultinomialNB

    feats = world.interactions.item_features
    assert feats is not None
    texts = feats.column("text").to_pylist()
    topics = world.truth.item_topic
    assert all(1 <= len(t.split()) <= 40 for t in texts)
    x = CountVectorizer().fit_transform(texts)
    acc = cross_val_score(MultinomialNB(), x, topics, cv=3).mean()
    majority = np.bincount(topics).max() / topics.size
    assert acc > 0.7 and acc > 3 * majority, (acc, majority)


def test_true_engagement_model(world: World) -> None:
    t = world.truth
    rng = np.random.default_rng(0)
    u = rng.integers(0, t.n_users, 5000)
    i = rng.integers(0, t.n_items, 5000)
    p = world.engagement_probabilities(u, i, rng.integers(0, 10, 5000), "home_feed")
    for arr in (p.examine, p.attract, p.click, p.save, p.hide):
        assert ((arr >= 0) & (arr <= 1)).all()
    assert (p.save <= p.click).all() and (p.click <= p.examine).all()
    # the documented attraction logit, term by term
    pref, base = world.config.preferences, world.config.surfaces.home_feed.click_base
    aff = np.einsum("nd,nd->n", t.user_vectors[u], t.item_vectors[i])
    logit = (base + pref.affinity_weight * aff + pref.quality_weight * t.item_quality[i]
             + pref.popularity_weight * t.item_log_popularity[i] + t.user_bias[u])
    np.testing.assert_allclose(p.attract, 1 / (1 + np.exp(-logit)), rtol=1e-9)
    q = world.engagement_probabilities(u, i, 0, "search", query_topic=t.item_topic[i])
    q_off = world.engagement_probabilities(u, i, 0, "search",
                                           query_topic=(t.item_topic[i] + 1) % t.n_topics)
    assert (q.click > q_off.click).all()
    with pytest.raises(ConfigError):
        world.engagement_probabilities(u, i, 0, "search")
    with pytest.raises(ConfigError):
        world.engagement_probabilities(u, i, 0, "related")
    with pytest.raises(ConfigError):
        world.engagement_probabilities(u, i, 0, "inbox")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    w = World.generate(TINY)
    w.save(tmp_path / "w")
    back = World.load(tmp_path / "w")
    assert back.config == w.config
    assert back.interactions.table.equals(w.interactions.table)
    assert back.requests.equals(w.requests)
    assert back.interactions.item_features.equals(w.interactions.item_features)
    for name in ("user_topics", "user_vectors", "item_vectors", "item_created_at",
                 "policy_user_vectors", "item_log_popularity", "topic_centers"):
        assert np.array_equal(getattr(back.truth, name), getattr(w.truth, name)), name
    assert back.truth.topic_names == w.truth.topic_names
    _check_propensities(back, n_per_surface=100)  # the reloaded policy is the same policy
    inter = Interactions.load(tmp_path / "w")  # the folder is also a saved Interactions
    assert len(inter) == len(w.interactions) and inter.n_items == TINY.n_items
    with pytest.raises(DataValidationError, match="not a saved world"):
        World.load(tmp_path)
