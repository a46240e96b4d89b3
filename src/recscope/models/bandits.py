"""Contextual bandits that fill chosen slots of a slate and log their propensities.

The ranked list's best items keep the other positions; each exploration slot (0-based
``slots``) is then filled, in order, from the remaining candidates by a linear
contextual bandit over the pair context
x(u, i) = [1, normalised upstream score, normalised log popularity, e_u ⊙ e_i]
(e: truncated-SVD embeddings of the training matrix, e_u the mean of the user's items).

- ``linucb`` (Li et al. 2010): argmax θᵀx + α·sqrt(xᵀA⁻¹x), mixed with ε-uniform
  exploration so every candidate has a known, positive propensity
  (1 − ε)·1[argmax] + ε / |pool|.
- ``thompson`` (Agrawal & Goyal 2013): θ̃ ~ N(θ, v²A⁻¹), argmax θ̃ᵀx; the propensity
  is the share of ``propensity_samples`` posterior draws under which the shown item wins
  (the way the Open Bandit Dataset logged its Thompson-sampling policy).

``fill`` returns a :class:`BanditSlate` (lists, chosen items, propensities, contexts);
``update(slate, rewards)`` adds the observed rewards of the slots to A and b.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from recscope.data.interactions import Interactions
from recscope.data.rankings import RankedLists
from recscope.models.base import ComponentConfig, register
from recscope.models.itemmeta import svd_item_embeddings
from recscope.models.rerank import Reranker, normalise


class BanditConfig(ComponentConfig):
    """Exploration ``slots`` (0-based positions), context ``dim``, prior ridge ``l2``."""

    slots: list[int] = Field(default_factory=lambda: [2, 5])
    dim: int = Field(default=16, ge=1)
    l2: float = Field(default=1.0, gt=0)

    @field_validator("slots")
    @classmethod
    def _check_slots(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 0 or len(set(v)) != len(v):
            raise ValueError("slots must be distinct non-negative positions")
        return sorted(v)


@dataclass
class BanditSlate:
    """What a bandit showed: the final ``lists``, the ``slots`` it filled, the items it
    chose there [n, s] (−1 when the pool was empty), their ``propensities`` [n, s] and
    the ``contexts`` [n, s, D] (kept for :meth:`SlotBandit.update`)."""

    lists: RankedLists
    slots: list[int]
    chosen: np.ndarray
    propensities: np.ndarray
    contexts: np.ndarray

    def to_table(self, user_ids: pa.Array | None = None,
                 item_ids: pa.Array | None = None) -> pa.Table:
        """Exploration log: ``user_id``, ``item_id``, ``position`` (0-based),
        ``propensity``, in the canonical column names."""
        n, s = self.chosen.shape
        ok = self.chosen >= 0
        users = np.repeat(self.lists.users, s).reshape(n, s)[ok]
        items = self.chosen[ok]
        pos = np.broadcast_to(np.asarray(self.slots, dtype=np.int32), (n, s))[ok]
        return pa.table({
            "user_id": user_ids.take(pa.array(users)) if user_ids is not None else users,
            "item_id": item_ids.take(pa.array(items)) if item_ids is not None else items,
            "position": pa.array(pos, pa.int32()),
            "propensity": pa.array(self.propensities[ok], pa.float64())})


class SlotBandit(Reranker):
    """Shared machinery of the slot-filling bandits (contexts, slate assembly, updates)."""

    kind: ClassVar[str] = "bandit"
    config: BanditConfig

    def __init__(self, config: BanditConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.item_vec: np.ndarray | None = None
        self.user_vec: np.ndarray | None = None
        self.log_pop: np.ndarray | None = None
        self.a_matrix: np.ndarray | None = None
        self.b_vector: np.ndarray | None = None
        self.last_slate: BanditSlate | None = None

    @property
    def context_dim(self) -> int:
        assert self.item_vec is not None
        return 3 + self.item_vec.shape[1]

    def _fit(self, train: Interactions) -> None:
        e = svd_item_embeddings(train, self.config.dim, self.config.seed)
        x = train.to_csr("binary")
        cnt = np.asarray(x.sum(axis=1)).ravel()
        u = np.asarray(x @ e) / np.maximum(cnt, 1)[:, None]
        pop = np.log1p(np.bincount(train.item_index, minlength=train.n_items))
        self.item_vec, self.user_vec = e, u.astype(np.float32)
        self.log_pop = pop / max(pop.max(), 1e-12)
        d = self.context_dim
        self.a_matrix = self.config.l2 * np.eye(d)
        self.b_vector = np.zeros(d)

    def contexts(self, users: np.ndarray, items: np.ndarray, rel: np.ndarray) -> np.ndarray:
        """Pair contexts [n, m, D]."""
        assert self.item_vec is not None and self.user_vec is not None
        assert self.log_pop is not None
        safe = np.maximum(items, 0)
        known = (users >= 0) & (users < len(self.user_vec))
        uv = np.zeros((len(users), self.item_vec.shape[1]), dtype=np.float32)
        uv[known] = self.user_vec[users[known]]
        inter = uv[:, None, :] * self.item_vec[safe]
        ones = np.ones((*items.shape, 1))
        r = np.where(np.isfinite(rel), rel, 0.0)[:, :, None]
        return np.concatenate([ones, r, self.log_pop[safe][:, :, None], inter], axis=2)

    def _choose(self, ctx: np.ndarray, pool: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
        """Chosen position per row (−1 if the pool is empty) and its propensity."""
        raise NotImplementedError

    def fill(self, lists: RankedLists, k: int, *, seed: int | None = None) -> BanditSlate:
        """Assemble top-``k`` slates; the slots are filled by the bandit (see module doc)."""
        self._check_fitted()
        rng = np.random.default_rng(self.config.seed if seed is None else seed)
        items = np.where(lists.items < self.n_items, lists.items, -1)
        rel = normalise(lists.scores, items >= 0)
        ctx = self.contexts(lists.users, items, rel)
        n, m = items.shape
        slots = [s for s in self.config.slots if s < k]
        fixed = [p for p in range(k) if p not in slots]
        out = np.full((n, k), -1, dtype=np.int64)
        taken = items < 0
        # the ranked list keeps the non-slot positions, best first
        order = np.argsort(np.where(taken, 1, 0), axis=1, kind="stable")
        for j, p in enumerate(fixed):
            if j < m:
                pos = order[:, j]
                ok = ~taken[np.arange(n), pos]
                out[ok, p] = pos[ok]
        rows = np.arange(n)
        for p in fixed:
            ok = out[:, p] >= 0
            taken[rows[ok], out[ok, p]] = True
        chosen = np.full((n, len(slots)), -1, dtype=np.int64)
        props = np.zeros((n, len(slots)))
        cts = np.zeros((n, len(slots), ctx.shape[2]))
        for j, p in enumerate(slots):
            pick, prop = self._choose(ctx, ~taken, rng)
            ok = pick >= 0
            out[ok, p] = pick[ok]
            taken[rows[ok], pick[ok]] = True
            chosen[ok, j] = items[rows[ok], pick[ok]]
            props[:, j] = np.where(ok, prop, 0.0)
            cts[ok, j] = ctx[rows[ok], pick[ok]]
        # close gaps left by empty pools (keep order, pad at the end)
        gap_order = np.argsort(out < 0, axis=1, kind="stable")
        out = np.take_along_axis(out, gap_order, axis=1)
        safe = np.maximum(out, 0)
        final = RankedLists(lists.users, np.where(out >= 0, items[rows[:, None], safe], -1),
                            np.where(out >= 0, rel[rows[:, None], safe], -np.inf),
                            traces=dict(lists.traces))
        slate = BanditSlate(final, slots, chosen, props, cts)
        self.last_slate = slate
        return slate

    def _select(self, users: np.ndarray, items: np.ndarray, rel: np.ndarray, k: int
                ) -> np.ndarray:  # pragma: no cover - rerank is overridden
        raise NotImplementedError

    def rerank(self, lists: RankedLists, k: int) -> RankedLists:
        """``fill(lists, k).lists``; the slate (with propensities) is kept in
        ``last_slate``."""
        return self.fill(lists, k).lists

    def update(self, slate: BanditSlate, rewards: np.ndarray) -> None:
        """Learn from the rewards [n, s] observed on the slots of ``slate``."""
        assert self.a_matrix is not None and self.b_vector is not None
        rewards = np.asarray(rewards, dtype=np.float64)
        if rewards.shape != slate.chosen.shape:
            raise ValueError(f"rewards must be {slate.chosen.shape}, got {rewards.shape}")
        ok = slate.chosen >= 0
        x = slate.contexts[ok]
        self.a_matrix = self.a_matrix + x.T @ x
        self.b_vector = self.b_vector + x.T @ rewards[ok]

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Ridge estimate θ = A⁻¹b and A⁻¹."""
        assert self.a_matrix is not None and self.b_vector is not None
        a_inv = np.linalg.inv(self.a_matrix)
        return a_inv @ self.b_vector, a_inv

    def _state(self) -> dict[str, np.ndarray]:
        assert self.item_vec is not None and self.user_vec is not None
        assert self.log_pop is not None and self.a_matrix is not None
        assert self.b_vector is not None
        return {"item_vec": self.item_vec, "user_vec": self.user_vec, "log_pop": self.log_pop,
                "a_matrix": self.a_matrix, "b_vector": self.b_vector}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        self.item_vec, self.user_vec, self.log_pop = a["item_vec"], a["user_vec"], a["log_pop"]
        self.a_matrix, self.b_vector = a["a_matrix"], a["b_vector"]


class LinUCBConfig(BanditConfig):
    """``alpha``: width of the confidence bonus; ``epsilon``: uniform exploration share."""

    alpha: float = Field(default=1.0, ge=0)
    epsilon: float = Field(default=0.1, ge=0, le=1)


@register("linucb")
class LinUCB(SlotBandit):
    """Upper-confidence-bound linear bandit with ε-uniform exploration."""

    Config = LinUCBConfig
    config: LinUCBConfig

    def _choose(self, ctx: np.ndarray, pool: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
        theta, a_inv = self.posterior()
        mean = ctx @ theta
        width = np.sqrt(np.maximum(np.einsum("nmd,de,nme->nm", ctx, a_inv, ctx), 0.0))
        ucb = np.where(pool, mean + self.config.alpha * width, -np.inf)
        greedy = np.argmax(ucb, axis=1)
        size = pool.sum(axis=1)
        eps = self.config.epsilon
        explore = rng.random(len(ctx)) < eps
        u = rng.random(len(ctx))
        # uniform pick among the pool: the ceil(u · size)-th available position
        cum = np.cumsum(pool, axis=1)
        target = np.minimum(np.floor(u * size).astype(np.int64) + 1, np.maximum(size, 1))
        uniform = np.argmax(cum >= target[:, None], axis=1)
        pick = np.where(explore, uniform, greedy)
        prop = (1 - eps) * (pick == greedy) + eps / np.maximum(size, 1)
        pick = np.where(size > 0, pick, -1)
        return pick, np.where(size > 0, prop, 0.0)


class ThompsonConfig(BanditConfig):
    """``v``: posterior scale; ``propensity_samples``: draws used to estimate the
    propensity of the shown item."""

    v: float = Field(default=0.5, gt=0)
    propensity_samples: int = Field(default=100, ge=1)


@register("thompson")
class LinearThompson(SlotBandit):
    """Linear Thompson sampling; propensities estimated by re-sampling the posterior."""

    Config = ThompsonConfig
    config: ThompsonConfig

    def _choose(self, ctx: np.ndarray, pool: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
        theta, a_inv = self.posterior()
        chol = np.linalg.cholesky(a_inv + 1e-12 * np.eye(len(a_inv)))
        _n, _m, d = ctx.shape
        s = self.config.propensity_samples
        z = rng.standard_normal((s, d))
        thetas = theta[None, :] + self.config.v * z @ chol.T  # [s, d]
        vals = np.einsum("nmd,sd->snm", ctx, thetas)
        vals = np.where(pool[None], vals, -np.inf)
        winners = np.argmax(vals, axis=2)  # [s, n]
        pick = winners[0]  # the draw that acts; the others estimate its propensity
        prop = (winners == pick[None, :]).mean(axis=0)
        size = pool.sum(axis=1)
        return np.where(size > 0, pick, -1), np.where(size > 0, prop, 0.0)
