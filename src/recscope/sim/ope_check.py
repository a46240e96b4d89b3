"""Off-policy evaluation validated in the simulated platform (``recscope.sim``).

:class:`SimulatedHomeFeed` is a :class:`~recscope.ope.synthetic.GroundTruthEnvironment`
built on a small built-in world (:class:`recscope.sim.World`):

* **Logged rounds.** A round is one home-feed request for the top slot (position 0).
  Its user is drawn with probability proportional to the world's activity (how often users
  open sessions); the world's own logging policy (:class:`recscope.sim.LoggingPolicy`:
  retrieve the user's pool of ``pool_size`` pins, Plackett–Luce over its noisy score)
  draws the item, and the policy's **exact** propensity of that item at position 0 is
  logged. The click is drawn with the world's TRUE probability
  ``examine(0) · σ(attraction_logit)`` (``WorldTruth.engagement_probabilities``, the rate
  the simulator's behaviour kernel reproduces). Context = the platform's estimate of the
  user's vector (what a production reward model could see); item side features = the
  platform's estimate of the item's vector.
* **Candidate.** A recscope component (ALS by default) fitted on the clicks of the world's
  historical log, turned into a softmax over its scores of the same pool
  (``π_e(i | u) ∝ exp(β · z(score(u, i)))``, ``z`` standardised per user; ``β = inf``:
  deterministic top-1). Its support lies inside the logging pool, so every action the
  candidate takes has a positive logging propensity.
* **Estimand.** ``V(π_e) = Σ_u p_u Σ_i π_e(i | u) P(click | u, i, position 0, home feed)``
  with ``p_u`` the activity share: the expected click-through of the top home-feed slot
  per request, a per-position click rate (not a per-slate count). It is computed exactly
  from the world's true engagement probabilities (no Monte Carlo); :meth:`on_policy`
  also runs the candidate on-policy on simulated requests, whose mean click agrees with
  the exact value within sampling error (tested).

Novelty, satisfaction and sessions of the full simulator are left out on purpose: they
make a request's click depend on earlier requests, which no single-round estimator
targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from recscope.errors import ConfigError
from recscope.ope.action_dists import ActionDist
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.reward import RewardModel
from recscope.sim import World, WorldConfig
from recscope.sim.world_model import window_end

SURFACE = "home_feed"
QHat = Literal["oracle", "logistic", "lightgbm", "none"]
QHatFn = Callable[[LoggedFeedback, np.ndarray], np.ndarray]


def small_world_config(seed: int = 0) -> WorldConfig:
    """A small built-in world (1,000 users, 500 pins, ~60,000 logged impressions)."""
    cfg = WorldConfig(seed=seed).scaled(0.05)
    lp = cfg.logging_policy.model_copy(update={"pool_size": 30, "temperature": 1.0})
    return cfg.model_copy(update={"n_impressions": 60_000, "logging_policy": lp})


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class SimulatedHomeFeed:
    """The world's logging policy vs a fitted candidate on the top home-feed slot.

    ``component``: a recscope component name (``als``, ``bpr``, ``popularity`` …) fitted on
    the world log's clicks, or ``oracle-noisy`` (true affinity plus noise, no fitting).
    ``beta``: the candidate's softmax inverse temperature on standardised scores.
    """

    config: WorldConfig = field(default_factory=small_world_config)
    component: str = "als"
    component_config: dict[str, Any] = field(
        default_factory=lambda: {"factors": 16, "iterations": 10, "device": "cpu"})
    beta: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.beta > 0):
            raise ConfigError(f"beta must be positive (inf: deterministic), got {self.beta}",
                              key="beta")
        self.world = World.generate(self.config)
        truth, policy = self.world.truth, self.world.policy
        users = np.arange(truth.n_users)
        self.pool, score = policy.home_pools(users)
        self.log_w = policy.log_weights(self.pool, score,
                                        np.full(len(users), window_end(self.config)))
        ok = np.isfinite(self.log_w)
        self.pi_log = np.where(ok, _softmax_rows(np.where(ok, self.log_w, -1e300)), 0.0)
        self.user_share = truth.user_activity / truth.user_activity.sum()
        safe = np.maximum(self.pool, 0)
        self.q_pool = np.where(ok, truth.engagement_probabilities(
            users[:, None], safe, np.zeros_like(safe), SURFACE).click, 0.0)
        self.pi_eval = self._candidate(self._candidate_scores(safe), ok)
        self._value = float(self.user_share @ (self.pi_eval * self.q_pool).sum(axis=1))

    # ------------------------------------------------------------------ candidate
    def _candidate_scores(self, items: np.ndarray) -> np.ndarray:
        truth = self.world.truth
        if self.component == "oracle-noisy":
            rng = np.random.default_rng(self.seed + 1)
            noisy = truth.item_vectors + 0.5 / np.sqrt(truth.item_vectors.shape[1]) \
                * rng.standard_normal(truth.item_vectors.shape)
            return np.einsum("ud,umd->um", truth.user_vectors, noisy[items])
        from recscope.models import get_component

        inter = self.world.interactions
        clicks = inter.select(inter.column("event") == "click")
        model = get_component(self.component)({"seed": self.seed, **self.component_config})
        model.fit(clicks)
        return np.asarray(model.score(np.arange(truth.n_users), items), dtype=np.float64)

    def _candidate(self, scores: np.ndarray, ok: np.ndarray) -> np.ndarray:
        s = np.where(ok & np.isfinite(scores), scores, np.nan)
        mu, sd = np.nanmean(s, axis=1, keepdims=True), np.nanstd(s, axis=1, keepdims=True)
        z = np.where(np.isnan(s), -np.inf, (s - mu) / np.where(sd > 0, sd, 1.0))
        if np.isinf(self.beta):
            out = np.zeros_like(z)
            out[np.arange(len(z)), np.argmax(z, axis=1)] = 1.0
            return out
        return _softmax_rows(np.where(np.isinf(z), -1e300, self.beta * z))

    def describe(self) -> dict[str, Any]:
        t = self.world.truth
        return {"world_seed": self.config.seed, "n_users": t.n_users, "n_items": t.n_items,
                "pool_size": int(self.pool.shape[1]),
                "logging_temperature": self.config.logging_policy.temperature,
                "candidate": self.component, "beta": self.beta,
                "true_value": self._value, "logging_value": self.logging_value()}

    # ------------------------------------------------------------------ protocol
    def true_value(self) -> float:
        """The candidate's exact expected top-slot click rate per home-feed request."""
        return self._value

    def logging_value(self) -> float:
        """The logging policy's exact top-slot click rate (the log's expected mean)."""
        return float(self.user_share @ (self.pi_log * self.q_pool).sum(axis=1))

    def _users(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.user_share), size=n, p=self.user_share)

    def log(self, n: int, rng: np.random.Generator) -> tuple[LoggedFeedback, np.ndarray]:
        """``n`` logged rounds from the world's logging policy, and the true q [n, A]."""
        truth = self.world.truth
        users = self._users(n, rng)
        slates = self.world.policy.sample(self.pool[users], self.log_w[users], 1, rng)
        item = slates.items[:, 0]
        q = np.zeros((n, truth.n_items))
        rows = np.arange(n)[:, None]
        q[rows, np.maximum(self.pool[users], 0)] = self.q_pool[users]
        reward = (rng.random(n) < q[np.arange(n), item]).astype(np.float64)
        fb = LoggedFeedback(
            context=truth.policy_user_vectors[users], action=item.astype(np.int64),
            position=np.zeros(n, np.int64), reward=reward, pscore=slates.propensity[:, 0],
            n_actions=truth.n_items, len_list=1, item_ids=np.arange(truth.n_items),
            action_context=truth.policy_item_vectors, user_index=users, source="sim-home-feed")
        return fb, q

    def target(self, fb: LoggedFeedback) -> ActionDist:
        """The candidate's distribution over items on each logged round's user."""
        if fb.user_index is None:
            raise ConfigError("simulated feedback must carry user_index", key="user_index")
        users = fb.user_index
        probs = np.zeros((fb.n_rounds, fb.n_actions, 1))
        rows = np.arange(fb.n_rounds)[:, None]
        probs[rows, np.maximum(self.pool[users], 0), 0] = self.pi_eval[users]
        return ActionDist.per_round(probs, f"{self.component}-softmax(beta={self.beta:g})",
                                    {"candidate": self.component, "beta": self.beta})

    def on_policy(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Clicks of ``n`` simulated top-slot requests served by the candidate itself."""
        users = self._users(n, rng)
        cum = self.pi_eval[users].cumsum(axis=1)
        slot = np.minimum((cum < rng.random(n)[:, None]).sum(axis=1), cum.shape[1] - 1)
        p = self.q_pool[users, slot]
        return (rng.random(n) < p).astype(np.float64)


def reward_predictions(kind: QHat, seed: int = 0) -> QHatFn | None:
    """A ``q_hat(fb, true_q)`` for :func:`check_against_truth`.

    ``oracle``: the true click probabilities (DM is then unbiased); ``logistic`` /
    ``lightgbm``: a cross-fitted :class:`RewardModel` on ``[user estimate, item
    estimate]``. The logistic model is additive in user and item features while the true
    click logit depends on their inner product, so it is misspecified on purpose.
    """
    if kind == "none":
        return None
    if kind == "oracle":
        return lambda fb, true_q: true_q
    if kind in ("logistic", "lightgbm"):
        model = RewardModel(kind=kind, seed=seed)
        return lambda fb, true_q: model.fit_predict(fb)
    raise ConfigError(f"unknown reward predictions {kind!r}; expected oracle, logistic, "
                      "lightgbm or none", key="q_hat")
