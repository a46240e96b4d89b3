"""Synthetic bandits with known policy values, to validate estimators against the truth.

:class:`SyntheticBandit` draws contexts, logs actions from a softmax logging policy and
rewards from a logistic model, so the true value of any evaluation policy is computable.
:class:`SyntheticSlateBandit` does the same for ranked slates with a cascade click model.

:class:`GroundTruthEnvironment` is the hook for the simulator (``recscope.sim``, used by
:class:`recscope.sim.ope_check.SimulatedHomeFeed`): any environment that can log feedback
under a policy and report a policy's true value can be passed to
:func:`check_against_truth`, which measures bias, RMSE and interval coverage of
estimators over repeated logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recscope.ope.action_dists import ActionDist, RankingPolicy
from recscope.ope.estimators import Estimator, Inputs, make_estimator, slate_probs_for
from recscope.ope.feedback import LoggedFeedback


class GroundTruthEnvironment(Protocol):
    """What :func:`check_against_truth` needs from an environment (see ``recscope.sim.ope_check``)."""

    def log(self, n: int, rng: np.random.Generator) -> tuple[LoggedFeedback, np.ndarray]:
        """Logged feedback from the environment's logging policy, plus true q [n, A]."""
        ...

    def target(self, fb: LoggedFeedback) -> ActionDist | RankingPolicy:
        """The evaluation policy on the logged rounds."""
        ...

    def true_value(self) -> float:
        """The evaluation policy's true value (mean reward per round or per slate)."""
        ...


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class SyntheticBandit:
    """Contextual bandit: ``x ~ N(0, I_d)``, ``P(r=1 | x, a) = σ(x·θ_a + b_a)``.

    Logging policy: softmax of ``β_log · x·φ_a``; evaluation policy: softmax of
    ``β_eval · x·φ_a`` (``β_eval = inf`` gives the greedy policy). One position.
    """

    n_actions: int = 10
    dim: int = 5
    beta_log: float = 0.5
    beta_eval: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.theta = rng.normal(size=(self.n_actions, self.dim)) * 0.5
        self.bias = rng.normal(size=self.n_actions) - 1.0
        self.phi = self.theta + rng.normal(size=self.theta.shape) * 0.5
        self._truth: float | None = None

    def q(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(x @ self.theta.T + self.bias)

    def _softmax(self, x: np.ndarray, beta: float) -> np.ndarray:
        s = x @ self.phi.T
        if np.isinf(beta):
            out = np.zeros_like(s)
            out[np.arange(len(s)), np.argmax(s, axis=1)] = 1.0
            return out
        z = beta * s
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def log(self, n: int, rng: np.random.Generator) -> tuple[LoggedFeedback, np.ndarray]:
        x = rng.normal(size=(n, self.dim))
        p = self._softmax(x, self.beta_log)
        u = rng.random(n)[:, None]
        a = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), self.n_actions - 1)
        q = self.q(x)
        r = (rng.random(n) < q[np.arange(n), a]).astype(np.float64)
        fb = LoggedFeedback(context=x, action=a.astype(np.int64), position=np.zeros(n, np.int64),
                            reward=r, pscore=p[np.arange(n), a], n_actions=self.n_actions,
                            len_list=1, item_ids=np.arange(self.n_actions).astype(object),
                            source="synthetic")
        return fb, q

    def target(self, fb: LoggedFeedback) -> ActionDist:
        return ActionDist.per_round(self._softmax(fb.context, self.beta_eval)[:, :, None],
                                    f"softmax(beta={self.beta_eval})")

    def true_value(self, n_mc: int = 400_000) -> float:
        """The evaluation policy's value, by Monte Carlo over contexts with exact q."""
        if self._truth is None:
            rng = np.random.default_rng(self.seed + 10_000)
            x = rng.normal(size=(n_mc, self.dim))
            self._truth = float((self._softmax(x, self.beta_eval) * self.q(x)).sum(axis=1).mean())
        return self._truth


@dataclass
class SyntheticSlateBandit:
    """Ranked slates of ``len_list`` items under a cascade click model.

    Logging and evaluation policies are Plackett–Luce over context-dependent scores; the
    user examines position 0, clicks item ``a`` with probability ``attr(x, a)`` and, with
    ``cascade=True``, stops after a click (rewards interact), else continues.
    """

    n_actions: int = 6
    len_list: int = 3
    dim: int = 3
    temp_log: float = 1.0
    temp_eval: float = 0.5
    cascade: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.theta = rng.normal(size=(self.n_actions, self.dim)) * 0.7
        self.bias = rng.normal(size=self.n_actions) - 0.5
        self.phi = self.theta + rng.normal(size=self.theta.shape) * 0.3
        self._truth: float | None = None

    def _rank(self, scores: np.ndarray, temp: float, rng: np.random.Generator) -> np.ndarray:
        g = scores / temp + rng.gumbel(size=scores.shape)
        return np.argsort(-g, axis=1)[:, : self.len_list]

    def _clicks(self, x: np.ndarray, slates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        attr = _sigmoid(x @ self.theta.T + self.bias)
        p = np.take_along_axis(attr, slates, axis=1)
        c = (rng.random(p.shape) < p).astype(np.float64)
        if self.cascade:
            before = np.cumsum(c, axis=1) - c
            c = c * (before == 0)
        return c

    def log(self, n: int, rng: np.random.Generator) -> tuple[LoggedFeedback, np.ndarray]:
        x = rng.normal(size=(n, self.dim))
        scores = -(x @ self.phi.T)  # logging ranks against the evaluation policy's taste
        slates = self._rank(scores, self.temp_log, rng)
        clicks = self._clicks(x, slates, rng)
        k = self.len_list
        rounds = n * k
        tmp = LoggedFeedback(context=np.repeat(x, k, axis=0), action=slates.ravel().astype(np.int64),
                             position=np.tile(np.arange(k), n), reward=clicks.ravel(),
                             pscore=np.ones(rounds), n_actions=self.n_actions, len_list=k,
                             item_ids=np.arange(self.n_actions).astype(object),
                             slate_id=np.repeat(np.arange(n), k), source="synthetic-slate")
        logging = RankingPolicy(scores, np.repeat(np.arange(n), k), self.temp_log, 0.0,
                                "logging", n_sim=4000, seed=self.seed)
        sp = logging.slate_probs(tmp)
        fb = LoggedFeedback(context=tmp.context, action=tmp.action, position=tmp.position,
                            reward=tmp.reward, pscore=sp.marginal, n_actions=self.n_actions,
                            len_list=k, item_ids=tmp.item_ids, slate_id=tmp.slate_id,
                            pscore_cascade=sp.prefix, pscore_slate=sp.slate,
                            source="synthetic-slate")
        return fb, np.empty((0, 0))

    def target(self, fb: LoggedFeedback) -> RankingPolicy:
        slate, _ = fb.slates()
        first = np.zeros(int(slate.max()) + 1, dtype=np.int64)
        first[slate[::-1]] = np.arange(fb.n_rounds)[::-1]
        return RankingPolicy(fb.context[first] @ self.phi.T, slate, self.temp_eval, 0.0,
                             "pl-eval", n_sim=4000, seed=self.seed)

    def true_value(self, n_mc: int = 300_000) -> float:
        """Expected clicks per slate under the evaluation policy (Monte Carlo)."""
        if self._truth is None:
            rng = np.random.default_rng(self.seed + 20_000)
            x = rng.normal(size=(n_mc, self.dim))
            slates = self._rank(x @ self.phi.T, self.temp_eval, rng)
            attr = _sigmoid(x @ self.theta.T + self.bias)
            p = np.take_along_axis(attr, slates, axis=1)
            if self.cascade:
                surv = np.cumprod(np.c_[np.ones(n_mc), 1 - p[:, :-1]], axis=1)
                self._truth = float((p * surv).sum(axis=1).mean())
            else:
                self._truth = float(p.sum(axis=1).mean())
        return self._truth


@dataclass(frozen=True)
class TruthCheck:
    """Bias, RMSE and CI coverage of each estimator over repeated logs."""

    truth: float
    bias: dict[str, float]
    rmse: dict[str, float]
    coverage: dict[str, float]
    n_reps: int


def check_against_truth(env: GroundTruthEnvironment, estimators: Sequence[str | Estimator],
                        *, n: int, n_reps: int, n_bootstrap: int = 200, seed: int = 0,
                        q_hat: Callable[[LoggedFeedback, np.ndarray], np.ndarray] | None = None,
                        ) -> TruthCheck:
    """Estimate the target's value on ``n_reps`` fresh logs of ``n`` rounds from ``env``.

    ``q_hat(fb, true_q)`` supplies reward-model predictions (default: none, so only
    model-free estimators can run).
    """
    ests = [make_estimator(e) if isinstance(e, str) else e for e in estimators]
    rng = np.random.default_rng(seed)
    truth = env.true_value()
    vals: dict[str, list[float]] = {e.label(): [] for e in ests}
    cover: dict[str, list[bool]] = {e.label(): [] for e in ests}
    for _ in range(n_reps):
        fb, true_q = env.log(n, rng)
        policy = env.target(fb)
        dist = policy.action_dist(fb.len_list) if isinstance(policy, RankingPolicy) else policy
        slate = slate_probs_for(policy, fb) if any(e.is_slate for e in ests) else None
        inp = Inputs(fb, dist, q_hat(fb, true_q) if q_hat else None, slate)
        for e in ests:
            r = e.run(inp, n_bootstrap=n_bootstrap, seed=rng)
            vals[e.label()].append(r.estimate)
            cover[e.label()].append(r.ci_low <= truth <= r.ci_high)
    return TruthCheck(
        truth=truth,
        bias={k: float(np.mean(v) - truth) for k, v in vals.items()},
        rmse={k: float(np.sqrt(np.mean((np.asarray(v) - truth) ** 2))) for k, v in vals.items()},
        coverage={k: float(np.mean(v)) for k, v in cover.items()}, n_reps=n_reps)
