"""The TRUE state of the built-in world: who likes what, and how users respond.

:func:`build_truth` draws users, items, creators and topics from a :class:`WorldConfig`;
:class:`WorldTruth` keeps every latent quantity as a numpy array and computes the true
engagement probabilities of any (user, item, position, surface) — the ground truth the
logged data and the simulator are generated from. The model is written out in
``docs/world.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recscope.errors import ConfigError, DataValidationError
from recscope.sim.config import SURFACES, WorldConfig
from recscope.sim.text import topic_vocabularies

_DAY_US = 86_400_000_000


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, numerically safe for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def micros(dt: object) -> int:
    """Epoch microseconds of a timezone-aware datetime."""
    return int(pa.scalar(dt, type=pa.timestamp("us", tz="UTC")).value)


@dataclass(frozen=True)
class EngagementProbabilities:
    """True per-impression probabilities (arrays of one shape).

    ``examine``: the user looks at the slot; ``click``: opens the pin (examined and
    attracted); ``save``: clicks and then saves; ``hide``: examines, is not attracted and
    hides it. ``click``, ``save`` and ``hide`` are unconditional probabilities of the
    impression; ``attract`` is P(click | examined).
    """

    examine: np.ndarray
    attract: np.ndarray
    click: np.ndarray
    save: np.ndarray
    hide: np.ndarray


@dataclass(frozen=True)
class WorldTruth:
    """Every latent quantity of the world, indexed by dense user/item/topic/creator index.

    Users ``u`` and items ``i`` are also their external ids in the log. Vectors live in
    ``R^latent_dim``; ``policy_*_vectors`` are the logging policy's (noisy) estimates of
    them, which is all the logging policy sees.
    """

    config: WorldConfig
    topic_names: tuple[str, ...]
    topic_centers: np.ndarray  # (K, d)
    topic_prevalence: np.ndarray  # (K,)
    creator_topic: np.ndarray  # (C,) int32
    creator_weight: np.ndarray  # (C,) share of new pins by each creator
    user_topics: np.ndarray  # (U, K) interest mixture, rows sum to 1
    user_vectors: np.ndarray  # (U, d)
    user_bias: np.ndarray  # (U,) click-logit offset
    user_activity: np.ndarray  # (U,) relative session rate, mean 1
    item_topic: np.ndarray  # (I,) int32
    item_creator: np.ndarray  # (I,) int32
    item_vectors: np.ndarray  # (I, d)
    item_quality: np.ndarray  # (I,) standard normal
    item_popularity: np.ndarray  # (I,) Zipf share, sums to 1
    item_log_popularity: np.ndarray  # (I,) standardised log of item_popularity
    item_created_at: np.ndarray  # (I,) epoch microseconds
    policy_user_vectors: np.ndarray  # (U, d)
    policy_item_vectors: np.ndarray  # (I, d)

    @property
    def n_users(self) -> int:
        return int(self.user_vectors.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    @property
    def n_topics(self) -> int:
        return int(self.topic_centers.shape[0])

    # ------------------------------------------------------------------ true model
    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True affinity ``user_vectors[u] · item_vectors[i]`` (element-wise pairs)."""
        u, i = np.broadcast_arrays(np.asarray(users), np.asarray(items))
        return np.einsum("...d,...d->...", self.user_vectors[u], self.item_vectors[i])

    def examination(self, surface: str, positions: np.ndarray) -> np.ndarray:
        """P(a user examines 0-based position ``p``) = ``(1 + p) ** -position_decay``."""
        s = self.config.surfaces.get(surface)
        p = np.asarray(positions, dtype=np.float64)
        if (p < 0).any():
            raise DataValidationError("negative position", column="position")
        return (1.0 + p) ** (-s.position_decay)

    def attraction_logit(self, users: np.ndarray, items: np.ndarray, surface: str, *,
                         query_topic: np.ndarray | int | None = None,
                         seed_item: np.ndarray | int | None = None) -> np.ndarray:
        """Logit of P(click | examined): surface intercept + affinity + quality +
        popularity + user bias + context (search: topic mismatch penalty; related:
        cosine similarity to the seed pin)."""
        pref = self.config.preferences
        base = self.config.surfaces.get(surface).click_base
        u, i = np.broadcast_arrays(np.asarray(users, dtype=np.int64),
                                   np.asarray(items, dtype=np.int64))
        logit = (base + pref.affinity_weight * self.affinity(u, i)
                 + pref.quality_weight * self.item_quality[i]
                 + pref.popularity_weight * self.item_log_popularity[i] + self.user_bias[u])
        if surface == "search":
            if query_topic is None:
                raise ConfigError("search needs the query topic", key="query_topic")
            q = np.broadcast_to(np.asarray(query_topic), i.shape)
            logit = logit - pref.search_mismatch_penalty * (self.item_topic[i] != q)
        elif surface == "related":
            if seed_item is None:
                raise ConfigError("related needs the seed item", key="seed_item")
            seed = np.broadcast_to(np.asarray(seed_item, dtype=np.int64), i.shape)
            logit = logit + pref.related_similarity_weight * _cosine(
                self.item_vectors[seed], self.item_vectors[i])
        return logit

    def engagement_probabilities(self, users: np.ndarray, items: np.ndarray,
                                 positions: np.ndarray, surface: str, *,
                                 query_topic: np.ndarray | int | None = None,
                                 seed_item: np.ndarray | int | None = None,
                                 ) -> EngagementProbabilities:
        """True probabilities of click, save and hide for impressions of ``items`` to
        ``users`` at ``positions`` on ``surface`` (position-based model, see docs)."""
        pref = self.config.preferences
        u, i, p = np.broadcast_arrays(np.asarray(users, dtype=np.int64),
                                      np.asarray(items, dtype=np.int64),
                                      np.asarray(positions, dtype=np.int64))
        exam = self.examination(surface, p)
        attract = sigmoid(self.attraction_logit(u, i, surface, query_topic=query_topic,
                                                seed_item=seed_item))
        aff = self.affinity(u, i)
        q = self.item_quality[i]
        save_given_click = sigmoid(pref.save_base + pref.save_quality_weight * q
                                   + pref.save_affinity_weight * aff)
        hide_given_skip = sigmoid(pref.hide_base - pref.hide_affinity_weight * aff
                                  - pref.hide_quality_weight * q)
        click = exam * attract
        return EngagementProbabilities(examine=exam, attract=attract, click=click,
                                       save=click * save_given_click,
                                       hide=exam * (1.0 - attract) * hide_given_skip)

    # ------------------------------------------------------------------ persistence
    def tables(self) -> dict[str, pa.Table]:
        """The truth as four Arrow tables (users, items, topics, creators)."""
        return {
            "truth_users": pa.table({
                "user_id": pa.array(np.arange(self.n_users, dtype=np.int64)),
                "activity": self.user_activity, "bias": self.user_bias,
                "topics": _fixed(self.user_topics), "vector": _fixed(self.user_vectors),
                "policy_vector": _fixed(self.policy_user_vectors)}),
            "truth_items": pa.table({
                "item_id": pa.array(np.arange(self.n_items, dtype=np.int64)),
                "topic": self.item_topic, "creator_id": self.item_creator,
                "quality": self.item_quality, "popularity": self.item_popularity,
                "log_popularity": self.item_log_popularity,
                "created_at": pa.array(self.item_created_at, pa.timestamp("us", tz="UTC")),
                "vector": _fixed(self.item_vectors),
                "policy_vector": _fixed(self.policy_item_vectors)}),
            "truth_topics": pa.table({
                "topic": pa.array(np.arange(self.n_topics, dtype=np.int32)),
                "name": pa.array(list(self.topic_names), pa.string()),
                "prevalence": self.topic_prevalence, "center": _fixed(self.topic_centers)}),
            "truth_creators": pa.table({
                "creator_id": pa.array(np.arange(self.creator_topic.size, dtype=np.int32)),
                "topic": self.creator_topic, "weight": self.creator_weight}),
        }

    @classmethod
    def from_dir(cls, path: Path, config: WorldConfig) -> WorldTruth:
        """Read the tables written by :meth:`tables` from ``path``."""
        t = {n: pq.read_table(path / f"{n}.parquet") for n in
             ("truth_users", "truth_items", "truth_topics", "truth_creators")}
        u, i, k, c = t["truth_users"], t["truth_items"], t["truth_topics"], t["truth_creators"]

        def col(table: pa.Table, name: str) -> np.ndarray:
            return table.column(name).to_numpy()

        return cls(
            config=config,
            topic_names=tuple(k.column("name").to_pylist()),
            topic_centers=_unfixed(k, "center"), topic_prevalence=col(k, "prevalence"),
            creator_topic=col(c, "topic"), creator_weight=col(c, "weight"),
            user_topics=_unfixed(u, "topics"), user_vectors=_unfixed(u, "vector"),
            user_bias=col(u, "bias"), user_activity=col(u, "activity"),
            item_topic=col(i, "topic"), item_creator=col(i, "creator_id"),
            item_vectors=_unfixed(i, "vector"), item_quality=col(i, "quality"),
            item_popularity=col(i, "popularity"),
            item_log_popularity=col(i, "log_popularity"),
            item_created_at=i.column("created_at").cast(pa.int64()).to_numpy(),
            policy_user_vectors=_unfixed(u, "policy_vector"),
            policy_item_vectors=_unfixed(i, "policy_vector"),
        )


def build_truth(config: WorldConfig, rng: np.random.Generator) -> WorldTruth:
    """Draw topics, creators, users and items (every distribution is in docs/world.md)."""
    K, U, I, C = config.n_topics, config.n_users, config.n_items, config.n_creators  # noqa: E741
    pref, pol = config.preferences, config.logging_policy
    d = pref.latent_dim
    names, _ = topic_vocabularies(K)
    centers = _unit_rows(rng.standard_normal((K, d)))
    prevalence = rng.dirichlet(np.full(K, config.topic_prevalence_concentration))
    # creators: Pareto sizes, one home topic each
    creator_weight = rng.pareto(config.creator_pareto_shape, C) + 1.0
    creator_weight /= creator_weight.sum()
    creator_topic = rng.choice(K, size=C, p=prevalence).astype(np.int32)
    # items
    item_creator = rng.choice(C, size=I, p=creator_weight).astype(np.int32)
    loyal = rng.random(I) < config.creator_topic_loyalty
    item_topic = np.where(loyal, creator_topic[item_creator],
                          rng.choice(K, size=I, p=prevalence)).astype(np.int32)
    item_vectors = centers[item_topic] + pref.item_spread / np.sqrt(d) * rng.standard_normal(
        (I, d))
    item_quality = rng.standard_normal(I)
    # popularity: Zipf over a rank that favours big creators
    key = 0.5 * _standardise(np.log(creator_weight[item_creator])) + rng.standard_normal(I)
    rank = np.empty(I, dtype=np.int64)
    rank[np.argsort(-key, kind="stable")] = np.arange(I)
    popularity = (rank + 1.0) ** (-config.popularity_exponent)
    popularity /= popularity.sum()
    log_pop = _standardise(np.log(popularity))
    start = micros(config.start)
    backfill = rng.random(I) < config.backfill_share
    created = np.where(
        backfill,
        start - (rng.random(I) * config.backfill_days * _DAY_US).astype(np.int64) - 1,
        start + (rng.random(I) * config.n_days * _DAY_US).astype(np.int64))
    # users
    user_topics = rng.dirichlet(config.topic_concentration * K * prevalence, size=U)
    user_topics = _fix_rows(user_topics, rng)
    user_vectors = user_topics @ centers + pref.user_spread / np.sqrt(d) * rng.standard_normal(
        (U, d))
    user_bias = pref.user_bias_std * rng.standard_normal(U)
    activity = rng.lognormal(0.0, config.activity_sigma, U) if config.activity_sigma > 0 \
        else np.ones(U)
    activity /= activity.mean()
    # the logging policy's imperfect model of users and items
    noise = pol.model_noise / np.sqrt(d)
    policy_users = user_vectors + noise * rng.standard_normal((U, d))
    policy_items = item_vectors + noise * rng.standard_normal((I, d))
    return WorldTruth(
        config=config, topic_names=tuple(names), topic_centers=centers,
        topic_prevalence=prevalence, creator_topic=creator_topic,
        creator_weight=creator_weight, user_topics=user_topics, user_vectors=user_vectors,
        user_bias=user_bias, user_activity=activity, item_topic=item_topic,
        item_creator=item_creator, item_vectors=item_vectors, item_quality=item_quality,
        item_popularity=popularity, item_log_popularity=log_pop, item_created_at=created,
        policy_user_vectors=policy_users, policy_item_vectors=policy_items)


def window_end(config: WorldConfig) -> int:
    """Epoch microseconds at which the logged period ends."""
    return micros(config.start + timedelta(days=config.n_days))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = np.einsum("...d,...d->...", a, b)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else x - x.mean()


def _fix_rows(theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of a sparse Dirichlet draw that underflowed to all zeros get one topic."""
    bad = ~np.isfinite(theta).all(axis=1) | (theta.sum(axis=1) <= 0)
    if bad.any():
        theta[bad] = 0.0
        theta[bad, rng.integers(0, theta.shape[1], int(bad.sum()))] = 1.0
    return theta / theta.sum(axis=1, keepdims=True)


def _fixed(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _unfixed(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    width = col.type.list_size
    return col.flatten().to_numpy().reshape(-1, width)


__all__ = ["SURFACES", "EngagementProbabilities", "WorldTruth", "build_truth", "sigmoid"]
