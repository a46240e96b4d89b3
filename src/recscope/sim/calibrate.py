"""A simulated platform calibrated from real logs.

:func:`calibrate_world` builds a :class:`~recscope.sim.world_model.WorldTruth` whose users,
items and topics are those of MovieLens 100K (genres as topics), so the simulated
platform resembles a real one:

* **activity**: each user's relative session rate is their share of ratings (heavy tail
  as observed); the lognormal sigma of those counts is reported;
* **popularity**: item popularity is the observed rating share (add-one smoothed); the
  Zipf exponent of the rank–count curve is reported;
* **user–topic preferences**: a user's topic mix is the genre mix of the films they rated
  (smoothed toward the overall genre prevalence); user vectors are that mix times the
  topic centres plus idiosyncratic noise, item vectors the centre of their genres;
* **quality**: the item's shrunken mean rating, standardised;
* **click-through level** (optional, from the Open Bandit Dataset's random-policy log):
  the position decay is fitted to OBD's click rate by slot, and the surfaces' click
  intercepts are shifted together until the simulated home-feed click rate of a random
  slate matches OBD's.

MovieLens has no creators; items get synthetic creators (Pareto sizes, within genre) so
the creator-supply channel still works. Everything else (session flow, satisfaction)
keeps the simulator's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from recscope.data.loaders import load_movielens, load_obd
from recscope.errors import DataValidationError
from recscope.sim.config import SurfacesConfig, WorldConfig
from recscope.sim.world_model import WorldTruth, micros, sigmoid


@dataclass
class CalibratedWorld:
    """The calibrated truth and what was fitted (for the record and the docs)."""

    truth: WorldTruth
    fit: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> WorldConfig:
        return self.truth.config


def _zipf_exponent(counts: np.ndarray) -> float:
    c = np.sort(counts[counts > 0])[::-1].astype(np.float64)
    r = np.arange(1, c.size + 1)
    head = slice(0, max(10, c.size // 2))  # fit the head, where the power law holds
    return float(-np.polyfit(np.log(r[head]), np.log(c[head]), 1)[0])


def obd_click_levels(path: str | Path) -> dict[str, Any]:
    """Click rate per slot (0-based) of an OBD random-policy log, and the fitted decay
    ``ctr(p) ∝ (1 + p) ** -decay``."""
    data = load_obd(path, affinities=False)
    pos = data.column("position")
    click = data.column("value")
    ctr = np.array([click[pos == p].mean() for p in range(int(pos.max()) + 1)])
    if (ctr <= 0).any():
        raise DataValidationError("a slot has no clicks; cannot fit position decay",
                                  file=str(path), column="click")
    x = np.log1p(np.arange(ctr.size))
    decay = float(-np.polyfit(x, np.log(ctr / ctr[0]), 1)[0]) if ctr.size > 1 else 0.0
    return {"ctr_by_position": ctr.tolist(), "ctr": float(click.mean()),
            "position_decay": max(decay, 0.0), "rows": int(click.size)}


def calibrate_world(movielens: str | Path, *, obd: str | Path | None = None, seed: int = 0,
                    latent_dim: int = 16, creators_per_item: float = 0.12,
                    base: WorldConfig | None = None) -> CalibratedWorld:
    """Fit a world to MovieLens 100K (and OBD click levels); see the module docstring."""
    ml = load_movielens(movielens)
    if ml.item_features is None or "genres" not in ml.item_features.column_names:
        raise DataValidationError("MovieLens folder lacks u.item (genres)", file=str(movielens))
    rng = np.random.default_rng([seed, 0xCA11B])
    U, n_items_ = ml.n_users, ml.n_items
    feats = ml.item_features
    pos = ml.items.index(feats.column("item_id"))
    genres_of = feats.column("genres").to_pylist()
    names = sorted({g for gs in genres_of for g in gs if g != "unknown"})
    K = len(names)
    g_index = {g: i for i, g in enumerate(names)}
    item_genres = np.zeros((n_items_, K))
    for row, gs in zip(pos, genres_of, strict=True):
        known = [g_index[g] for g in gs if g in g_index]
        if known:
            item_genres[row, known] = 1.0 / len(known)
    no_genre = item_genres.sum(axis=1) == 0
    item_genres[no_genre] = 1.0 / K
    ui, ii = ml.user_index, ml.item_index
    ratings = ml.column("value").astype(np.float64)
    # activity and popularity
    ucount = np.bincount(ui, minlength=U).astype(np.float64)
    icount = np.bincount(ii, minlength=n_items_).astype(np.float64)
    activity = ucount / ucount.mean()
    popularity = (icount + 1.0) / (icount + 1.0).sum()
    logp = np.log(popularity)
    log_pop = (logp - logp.mean()) / logp.std()
    # topics
    prevalence = item_genres.T @ icount
    prevalence /= prevalence.sum()
    user_mix = np.zeros((U, K))
    np.add.at(user_mix, ui, item_genres[ii])
    user_mix = (user_mix + 2.0 * prevalence) / (user_mix.sum(axis=1, keepdims=True) + 2.0)
    d = latent_dim
    centers = rng.standard_normal((K, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    cfg0 = base or WorldConfig()
    pref = cfg0.preferences.model_copy(update={"latent_dim": d})
    item_vec = item_genres @ centers + pref.item_spread / np.sqrt(d) * rng.standard_normal(
        (n_items_, d))
    user_vec = user_mix @ centers + pref.user_spread / np.sqrt(d) * rng.standard_normal((U, d))
    # quality: shrunken mean rating
    gmean = ratings.mean()
    rsum = np.bincount(ii, ratings, minlength=n_items_)
    shrunk = (rsum + 10.0 * gmean) / (icount + 10.0)
    quality = (shrunk - shrunk.mean()) / shrunk.std()
    # synthetic creators within the primary genre
    C = max(1, round(n_items_ * creators_per_item))
    creator_weight = rng.pareto(cfg0.creator_pareto_shape, C) + 1.0
    creator_weight /= creator_weight.sum()
    primary = item_genres.argmax(axis=1)
    creator_topic = rng.choice(K, size=C, p=prevalence).astype(np.int32)
    item_creator = np.empty(n_items_, dtype=np.int32)
    for k in range(K):
        members = np.flatnonzero(primary == k)
        pool = np.flatnonzero(creator_topic == k)
        if pool.size == 0:
            pool = np.arange(C)
        w = creator_weight[pool] / creator_weight[pool].sum()
        item_creator[members] = rng.choice(pool, size=members.size, p=w)
    fit: dict[str, Any] = {
        "source": str(movielens), "n_users": U, "n_items": n_items_, "n_topics": K,
        "topics": names, "activity_sigma": float(np.log(ucount).std()),
        "zipf_exponent": _zipf_exponent(icount),
        "top_1pct_item_share": float(np.sort(icount)[::-1][:max(1, n_items_ // 100)].sum()
                                     / icount.sum()),
        "topic_prevalence": dict(zip(names, prevalence.round(4).tolist(), strict=True)),
    }
    surfaces = cfg0.surfaces
    cfg = cfg0.model_copy(update={
        "seed": seed, "n_users": U, "n_items": n_items_, "n_topics": K, "n_creators": C,
        "n_impressions": len(ml), "preferences": pref,
        "activity_sigma": min(fit["activity_sigma"], 5.0),
        "popularity_exponent": min(max(fit["zipf_exponent"], 0.0), 5.0)})
    start = micros(cfg.start)
    policy_noise = cfg.logging_policy.model_noise / np.sqrt(d)
    truth = WorldTruth(
        config=cfg, topic_names=tuple(names), topic_centers=centers,
        topic_prevalence=prevalence, creator_topic=creator_topic,
        creator_weight=creator_weight, user_topics=user_mix, user_vectors=user_vec,
        user_bias=cfg.preferences.user_bias_std * rng.standard_normal(U),
        user_activity=activity, item_topic=primary.astype(np.int32),
        item_creator=item_creator, item_vectors=item_vec, item_quality=quality,
        item_popularity=popularity, item_log_popularity=log_pop,
        item_created_at=np.full(n_items_, start - 1, dtype=np.int64),
        policy_user_vectors=user_vec + policy_noise * rng.standard_normal((U, d)),
        policy_item_vectors=item_vec + policy_noise * rng.standard_normal((n_items_, d)))
    if obd is not None:
        levels = obd_click_levels(obd)
        shift = _match_click_rate(truth, levels["ctr_by_position"][0], rng)
        data = surfaces.model_dump()
        for s in data.values():
            s["click_base"] = float(np.clip(s["click_base"] + shift, -12.0, 6.0))
            s["position_decay"] = levels["position_decay"]
        cfg = cfg.model_copy(update={"surfaces": SurfacesConfig.model_validate(data)})
        truth = _with_config(truth, cfg)
        fit["obd"] = {**levels, "click_base_shift": shift, "source": str(obd)}
    fit["window_end"] = (cfg.start + timedelta(days=cfg.n_days)).isoformat()
    return CalibratedWorld(truth, fit)


def _with_config(truth: WorldTruth, cfg: WorldConfig) -> WorldTruth:
    from dataclasses import replace

    return replace(truth, config=cfg)


def _match_click_rate(truth: WorldTruth, target: float, rng: np.random.Generator,
                      n: int = 20_000) -> float:
    """Shift of every surface's click intercept so that a random home-feed slot at
    position 0 is clicked at rate ``target`` (bisection on a sample of pairs)."""
    users = rng.integers(0, truth.n_users, n)
    items = rng.integers(0, truth.n_items, n)
    base = truth.attraction_logit(users, items, "home_feed")
    lo, hi = -15.0, 15.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if sigmoid(base + mid).mean() > target:
            hi = mid
        else:
            lo = mid
    return float((lo + hi) / 2)


def describe_calibration(world: CalibratedWorld) -> dict[str, Any]:
    """The fitted quantities, JSON-ready."""
    return dict(world.fit)


__all__ = ["CalibratedWorld", "calibrate_world", "describe_calibration", "obd_click_levels"]
