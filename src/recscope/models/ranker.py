"""LambdaMART ranker (LightGBM) over the candidates of a union retriever.

Features of a (user, candidate) pair come from the upstream stages and the training log:
every member retriever's score (min-max scaled by the range of the member's list for the
user, so that the
scale shift between retrievers fitted for training and for serving does not matter) and
rank (missing when the member did not retrieve it), the
number of members that retrieved it, the item's popularity and the user's activity (as
percentiles, which do not shift between the inner split and the full training split),
the user's affinity to the item's topic (share of the user's
training interactions in that topic; item side table column ``topic``), and the item's
age (days from its first training interaction to the newest training row).

Training groups come from the training split only: each user's training items are split
once more (``label_fraction`` held out per user, seeded); the retrievers are fitted on the
rest, their candidates are labelled 1 when held out, and LightGBM learns to order them
(users whose candidates hold no positive are dropped). The retrievers are then refitted
on the whole training split to serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recscope.data.interactions import Interactions
from recscope.data.rankings import RankedLists
from recscope.data.splits import random_holdout
from recscope.errors import ConfigError
from recscope.models.base import Component, ComponentConfig, register, top_k
from recscope.models.callbacks import EpochCallback
from recscope.models.itemmeta import item_codes
from recscope.models.union import (
    Candidates,
    UnionConfig,
    UnionMember,
    UnionRetriever,
    _positions,
    member_names,
    score_range,
)

_DAY_US = 86_400 * 1_000_000
BASE_FEATURES = ("n_retrieved", "item_pop_pct", "user_activity_pct", "user_topic_affinity",
                 "item_age_days")


class LambdaMARTConfig(ComponentConfig):
    """Candidate ``members`` (as in ``union``), the inner split and LightGBM's knobs."""

    members: list[UnionMember] = Field(default_factory=lambda: UnionConfig().members)
    objective: Literal["lambdarank", "rank_xendcg", "binary"] = "lambdarank"
    label_fraction: float = Field(default=0.25, gt=0, lt=1)
    max_train_users: int | None = Field(default=None, ge=1)
    n_estimators: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=15, ge=2)
    min_data_in_leaf: int = Field(default=100, ge=1)
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    lambdarank_truncation_level: int = Field(default=20, ge=1)
    features: list[Literal["n_retrieved", "item_pop_pct", "user_activity_pct",
                           "user_topic_affinity", "item_age_days"]] = Field(
        default_factory=lambda: list(BASE_FEATURES))
    missing_features: Literal["error", "ignore"] = Field(
        default="error", description="a requested feature the data cannot give (topic "
        "affinity without an item topic column): 'error' names it, 'ignore' leaves it 0")
    init_weight: float = Field(default=0.0, ge=0)
    monotone: bool = True
    num_threads: int = Field(default=0, ge=0)


class _Stats:
    """Per-user and per-item statistics of one training log (feature inputs)."""

    def __init__(self, train: Interactions, topics: np.ndarray) -> None:
        from scipy.stats import rankdata

        # percentiles, not counts: the ranker is trained on an inner split with fewer
        # rows than it serves on, and raw counts would shift between the two
        pop = np.bincount(train.item_index, minlength=train.n_items)
        self.item_pop_pct = rankdata(pop) / max(1, len(pop))
        ucount = np.bincount(train.user_index, minlength=train.n_users)
        self.user_activity_pct = rankdata(ucount) / max(1, len(ucount))
        ts = train.timestamps
        first = np.full(train.n_items, np.iinfo(np.int64).max)
        if len(ts):
            np.minimum.at(first, train.item_index, ts)
        newest = ts.max() if len(ts) else 0
        self.item_age = np.where(first == np.iinfo(np.int64).max, 0.0,
                                 (newest - first) / _DAY_US)
        self.topics = topics
        n_topics = int(topics.max()) + 1 if topics.size and topics.max() >= 0 else 0
        if n_topics:
            ok = topics[train.item_index] >= 0
            m = sp.csr_matrix((np.ones(int(ok.sum())), (train.user_index[ok],
                                                        topics[train.item_index][ok])),
                              shape=(train.n_users, n_topics))
            self.user_topic = np.asarray(m.toarray() / np.maximum(ucount, 1)[:, None])
        else:
            self.user_topic = np.zeros((train.n_users, 0))

    def features(self, cand: Candidates) -> np.ndarray:
        """Feature matrix [n × m, F] (members' scores and ranks, then BASE_FEATURES)."""
        items = np.maximum(cand.items, 0)
        users = np.clip(cand.users, 0, len(self.user_activity_pct) - 1)
        known_user = (cand.users >= 0) & (cand.users < len(self.user_activity_pct))
        scores = np.where(np.isfinite(cand.member_scores), cand.member_scores, np.nan)
        # rank 1..depth in each member's list; NaN (LightGBM's missing) when not retrieved
        ranks = np.where(cand.member_ranks > 0, cand.member_ranks, np.nan).astype(np.float32)
        # scores scaled by the range of each member's own list for the user: robust to
        # the scale shift between retrievers fitted for training and for serving
        lo = cand.member_range[:, None, :, 0]
        span = cand.member_range[:, None, :, 1] - lo
        scaled = np.where(span > 0, (scores - lo) / np.where(span > 0, span, 1.0), 1.0)
        cols = [scaled[:, :, r] for r in range(scores.shape[2])]
        cols += [ranks[:, :, r] for r in range(ranks.shape[2])]
        cols.append((cand.member_ranks > 0).sum(axis=2).astype(np.float32))
        cols.append(self.item_pop_pct[items])
        cols.append(np.where(known_user, self.user_activity_pct[users], 0.0)[:, None]
                    * np.ones(items.shape[1]))
        if self.user_topic.shape[1]:
            t = self.topics[items]
            aff = self.user_topic[users[:, None], np.maximum(t, 0)]
            cols.append(np.where((t >= 0) & known_user[:, None], aff, 0.0))
        else:
            cols.append(np.zeros(items.shape))
        cols.append(self.item_age[items])
        return np.stack([np.asarray(c, dtype=np.float32) for c in cols], axis=2).reshape(
            -1, len(cols))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"item_pop_pct": self.item_pop_pct, "user_activity_pct": self.user_activity_pct,
                "item_age": self.item_age, "topics": self.topics, "user_topic": self.user_topic}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> _Stats:
        obj = cls.__new__(cls)
        obj.item_pop_pct, obj.user_activity_pct = a["item_pop_pct"], a["user_activity_pct"]
        obj.item_age, obj.topics, obj.user_topic = a["item_age"], a["topics"], a["user_topic"]
        return obj


def item_topics(train: Interactions) -> np.ndarray:
    """Dense topic code of every item (−1 unknown) from the item side table's ``topic``."""
    return item_codes(train, "topic")[0]


@register("lambdamart")
class LambdaMARTRanker(Component):
    """Learning to rank over union candidates (see the module docstring)."""

    kind = "ranker"
    Config = LambdaMARTConfig
    config: LambdaMARTConfig

    def __init__(self, config: LambdaMARTConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.retriever: UnionRetriever | None = None
        self.booster: Any = None
        self.stats: _Stats | None = None
        self.train_report: dict[str, float] = {}
        self._on_epoch: EpochCallback | None = None

    @property
    def feature_names(self) -> list[str]:
        names = member_names(self.config.members)
        return ([f"{n}_scaled_score" for n in names] + [f"{n}_rank" for n in names]
                + [f for f in BASE_FEATURES if f in self.config.features])

    def _columns(self) -> np.ndarray:
        """Columns of the full feature matrix this ranker uses (members' always)."""
        r = len(self.config.members)
        extra = [2 * r + i for i, f in enumerate(BASE_FEATURES) if f in self.config.features]
        return np.r_[np.arange(2 * r), extra].astype(np.int64)

    def _union(self) -> UnionRetriever:
        return UnionRetriever({"members": [m.model_dump() for m in self.config.members],
                               "seed": self.config.seed})

    def _fit(self, train: Interactions) -> None:
        import lightgbm as lgb

        cfg = self.config
        inner = random_holdout(train, cfg.label_fraction, seed=cfg.seed)
        fit_part, labels = inner.train, inner.test
        topics = item_topics(train)
        if "user_topic_affinity" in cfg.features and not (topics >= 0).any() and \
                cfg.missing_features == "error":
            raise ConfigError(
                "feature 'user_topic_affinity' needs the item side table column 'topic', "
                "which the training data lacks (train on data with item features, e.g. a "
                "'data split' folder, remove the feature from features, or set "
                "missing_features = \"ignore\" to leave it 0)", key="features")
        union = self._union().fit(fit_part)
        users = np.unique(labels.user_index).astype(np.int32)
        if cfg.max_train_users is not None and len(users) > cfg.max_train_users:
            rng = np.random.default_rng(cfg.seed)
            users = np.sort(rng.choice(users, cfg.max_train_users, replace=False))
        if len(users) == 0:
            raise ConfigError("no user has enough training interactions to hold out ranker "
                              "labels; lower label_fraction or add data", key="label_fraction")
        cand = union.candidates(users)
        x = _Stats(fit_part, topics).features(cand)[:, self._columns()]
        truth = labels.to_csr("binary")
        y = np.asarray(truth[cand.users[:, None], np.maximum(cand.items, 0)].todense()
                       ).astype(np.float32) * (cand.items >= 0)
        valid = cand.items >= 0
        has_pos = (y > 0).any(axis=1)
        rows = np.flatnonzero(has_pos)
        if len(rows) == 0:
            raise ConfigError("no held-out training item is among the candidates, so the "
                              "ranker has nothing to learn; raise the quotas", key="members")
        mask = valid[rows].ravel()
        xg = x.reshape(len(users), -1, x.shape[1])[rows].reshape(-1, x.shape[1])[mask]
        yg = y[rows].ravel()[mask]
        groups = valid[rows].sum(axis=1)
        params = {"objective": cfg.objective, "metric": "None",
                  "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
                  "min_data_in_leaf": cfg.min_data_in_leaf,
                  "feature_fraction": cfg.feature_fraction, "bagging_seed": cfg.seed,
                  "feature_fraction_seed": cfg.seed, "seed": cfg.seed,
                  "lambdarank_truncation_level": cfg.lambdarank_truncation_level,
                  "deterministic": True, "force_row_wise": True, "verbosity": -1,
                  "num_threads": cfg.num_threads}
        if cfg.monotone:  # a better retriever score or rank never lowers the score
            r = len(cfg.members)
            params["monotone_constraints"] = [1] * r + [-1] * r + [
                1 if f == "n_retrieved" else 0 for f in self.feature_names[2 * r:]]
            params["monotone_constraints_method"] = "advanced"
        ds = lgb.Dataset(xg, yg, group=groups, feature_name=self.feature_names,
                         init_score=self._init_score(xg), free_raw_data=True)
        self.train_report = {"groups": float(len(rows)), "rows": float(len(yg)),
                             "positives": float(yg.sum()),
                             "candidate_recall": float(y.sum() / max(1, truth[users].nnz))}
        # serve with retrievers fitted on the whole training split (fitted before the
        # boosting, so that the model can recommend inside on_epoch)
        self.retriever = self._union().fit(train)
        self.stats = _Stats(train, topics)
        callbacks = [] if self._on_epoch is None else [self._epoch_hook(self._on_epoch)]
        self.booster = lgb.train(params, ds, num_boost_round=cfg.n_estimators,
                                 callbacks=callbacks)

    def fit(self, train: Interactions, *, on_epoch: EpochCallback | None = None
            ) -> LambdaMARTRanker:
        """Fit on ``train``; ``on_epoch(round, {})`` is called after every boosting round
        (the model can recommend inside it) and returning True stops the boosting there."""
        self._on_epoch = on_epoch
        try:
            super().fit(train)
        finally:
            self._on_epoch = None
        return self

    def _epoch_hook(self, on_epoch: EpochCallback) -> Any:
        """A LightGBM callback: expose the booster so far, ask ``on_epoch`` whether to stop."""
        import lightgbm as lgb

        def hook(env: Any) -> None:
            self.booster = env.model
            if on_epoch(env.iteration + 1, {}):
                raise lgb.callback.EarlyStopException(env.iteration, [])

        hook.order = 100  # type: ignore[attr-defined]
        return hook

    # ------------------------------------------------------------------ scoring
    def _init_score(self, x: np.ndarray) -> np.ndarray:
        """Boosting starts from ``init_weight`` × the first member's scaled score, so the
        trees learn corrections to the strongest retriever instead of re-deriving its
        fine-grained order from coarse splits."""
        if not self.config.init_weight:
            return np.zeros(len(x))
        return self.config.init_weight * np.nan_to_num(x[:, 0].astype(np.float64), nan=0.0)

    def rank_candidates(self, cand: Candidates) -> np.ndarray:
        """Ranker scores of union candidates [n, m] (−inf for pads)."""
        assert self.booster is not None and self.stats is not None
        x = self.stats.features(cand)[:, self._columns()]
        s = self.booster.predict(x, num_threads=self.config.num_threads or 0)
        s = (s + self._init_score(x)).reshape(cand.items.shape)
        return np.where(cand.items >= 0, s, -np.inf).astype(np.float32)

    def _candidates_for(self, users: np.ndarray, items: np.ndarray) -> Candidates:
        """Features of arbitrary (user, item) pairs: members' scores; ranks within each
        member's top-``quota`` list (0 when outside it)."""
        assert self.retriever is not None
        n_members = len(self.retriever.members)
        scores = np.empty((*items.shape, n_members), dtype=np.float32)
        ranks = np.zeros((*items.shape, n_members), dtype=np.int32)
        ranges = np.zeros((len(users), n_members, 2), dtype=np.float32)
        quotas = [m.quota for m in self.config.members]
        for r, member in enumerate(self.retriever.members):
            scores[:, :, r] = member.score(users, items)
            rl = member.recommend(users, sum(quotas[: r + 1]))
            ranks[:, :, r] = _positions(rl.items, items, self.n_items)
            ranges[:, r] = score_range(rl)
        return Candidates(users, items, scores, ranks, np.full(items.shape, -1),
                          self.retriever.names, ranges)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.rank_candidates(self._candidates_for(users, items))

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        items = np.broadcast_to(np.arange(self.n_items, dtype=np.int32),
                                (len(users), self.n_items))
        return self._score_items(users, np.ascontiguousarray(items))

    def recommend(self, users: np.ndarray, k: int, *, exclude: Any = "train",
                  batch_size: int = 2048) -> RankedLists:
        """Top-``k`` of the union's candidates by ranker score; the ``retrieval`` trace
        holds the candidates. Cold users get the popularity ranking."""
        self._check_fitted()
        assert self.retriever is not None
        users = np.asarray(users, dtype=np.int32)
        depth = self.retriever.depth
        items = np.full((len(users), k), -1, dtype=np.int32)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        trace = np.full((len(users), depth), -1, dtype=np.int32)
        cold = self.cold_users(users)
        if cold.any():
            rl = Component.recommend(self, users[cold], k, exclude=exclude)
            items[cold], scores[cold] = rl.items, rl.scores
        warm = np.flatnonzero(~cold)
        for start in range(0, len(warm), batch_size):
            rows = warm[start:start + batch_size]
            cand = self.retriever.candidates(users[rows], exclude=exclude)
            s = self.rank_candidates(cand)
            pos, sc = top_k(s, k)
            items[rows] = np.where(pos >= 0, np.take_along_axis(cand.items, np.maximum(pos, 0),
                                                                1), -1)
            scores[rows] = sc
            trace[rows] = cand.items
        return RankedLists(users, items, scores, traces={"retrieval": trace})

    def feature_importance(self) -> dict[str, float]:
        """Total gain of every feature (what the ranker learned from)."""
        self._check_fitted()
        gain = self.booster.feature_importance(importance_type="gain")
        return dict(zip(self.booster.feature_name(), map(float, gain), strict=True))

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        assert self.stats is not None
        out = {f"stats.{k}": v for k, v in self.stats.arrays().items()}
        keys = sorted(self.train_report)
        out["report_keys"] = np.array(keys)
        out["report_values"] = np.array([self.train_report[k] for k in keys])
        return out

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        self.stats = _Stats.from_arrays({k.removeprefix("stats."): v for k, v in a.items()
                                         if k.startswith("stats.")})
        self.train_report = {str(k): float(v) for k, v in zip(a["report_keys"],
                                                               a["report_values"], strict=True)}

    def _save_extra(self, directory: Path) -> None:
        assert self.retriever is not None and self.booster is not None
        (directory / "lightgbm.txt").write_text(self.booster.model_to_string())
        self.retriever.save(directory / "retrieval")

    def _load_extra(self, directory: Path) -> None:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_str=(directory / "lightgbm.txt").read_text())
        self.retriever = Component.load(directory / "retrieval")
