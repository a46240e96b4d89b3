"""Semi-synthetic Open Bandit Dataset: OBD's real structure with a click model of known truth.

The OBD sample has 10,000 rounds per (policy, campaign), so the uniform-random ``all`` log
holds 38 clicks and the Bernoulli TS "truth" 42: too few to tell estimator error from
sampling noise. :class:`SemiSyntheticOBD` keeps everything real except the clicks, which
come from a click model whose policy values are known exactly, so the same estimators can
be run at any log size against an exact truth:

- **Rounds**: the real (user-feature context, position) rows of the uniform-random log,
  resampled with replacement; **items**: its 80 items with their real item features.
- **Logging policy**: uniform random, propensity ``1 / n_items`` at every position.
- **Evaluation policy**: a context-free table ``π(a, k)``; :meth:`SemiSyntheticOBD.from_obd`
  uses the Bernoulli TS policy rebuilt from the BTS log (:func:`recscope.ope.from_log`).
- **Clicks**: ``P(click | x, a, k) = σ(c + γ·z(a, k) + s_u·u(x) + s_h·h(x, a))`` with
  ``z = log π(a, k)`` standardised (TS shows items more often where they click more),
  ``u`` a user effect and ``h`` a user × item-feature interaction (fixed random projections
  of the real features, standardised and clipped at 3 standard deviations; ``h`` has
  mean 0 for every item, so a model additive in user and item features is misspecified). ``c`` and ``γ`` are solved so that the
  uniform policy's and the evaluation policy's click rates equal two given rates (from
  :meth:`from_obd`: the real sample's on-policy rates of the random and BTS logs).

The true value of any context-free policy is an exact finite sum over the population
(:meth:`SemiSyntheticOBD.value`); :meth:`SemiSyntheticOBD.on_policy` simulates the
evaluation policy's own log, as OBP's protocol measures the truth.
:func:`resampled_estimates` is OBP's protocol (``benchmarks/ope.py obd``): bootstrap
resamples of one log, the reward model refitted on each, every estimator's point estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from recscope.errors import ConfigError
from recscope.ope.action_dists import ActionDist, from_log
from recscope.ope.estimators import Inputs, make_estimator
from recscope.ope.feedback import LoggedFeedback
from recscope.ope.reward import Kind, RewardModel


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _standardise(m: np.ndarray, axis: int | None = 0) -> np.ndarray:
    sd = m.std(axis=axis, keepdims=axis is not None)
    return (m - m.mean(axis=axis, keepdims=axis is not None)) / np.where(sd > 0, sd, 1.0)


@dataclass
class SemiSyntheticOBD:
    """Uniform-random logs over a real population, with an exactly known policy value.

    ``population``: a log whose rounds give the (context, position) rows and whose
    ``action_context`` gives the item features. ``target_table`` [n_items, len_list]: the
    evaluation policy. ``logging_rate`` / ``target_rate``: the click rates the uniform and
    the evaluation policy must have. ``user_scale`` / ``interaction_scale``: logit scales
    of the user effect (standardised over the distinct (context, position) rows, so its
    standard deviation over rounds differs: 0.44 for ``user_scale`` 0.5 on OBD ``all``)
    and of the user × item interaction (standardised over rounds).
    """

    population: LoggedFeedback
    target_table: np.ndarray
    logging_rate: float
    target_rate: float
    user_scale: float = 0.5
    interaction_scale: float = 0.5
    seed: int = 0
    name: str = "semi-synthetic-obd"
    _combo: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pop = self.population
        table = np.asarray(self.target_table, np.float64)
        if table.shape != (pop.n_actions, pop.len_list):
            raise ConfigError(f"target table must be [n_items, len_list] = "
                              f"{(pop.n_actions, pop.len_list)}, got {table.shape}", key="target")
        if not np.allclose(table.sum(axis=0), 1.0) or (table < 0).any():
            raise ConfigError("target table columns must be probability distributions",
                              key="target")
        for key, rate in (("logging_rate", self.logging_rate), ("target_rate", self.target_rate)):
            if not 0.0 < rate < 1.0:
                raise ConfigError(f"{key} must be in (0, 1), got {rate}", key=key)
        self.target_table = table
        # distinct (context, position) pairs of the population, with their counts
        keys = np.hstack([pop.context, pop.position[:, None].astype(np.float64)])
        uniq, self._combo, counts = np.unique(keys, axis=0, return_inverse=True,
                                              return_counts=True)
        self._combo = self._combo.ravel()
        self._ctx, self._pos = uniq[:, :-1], uniq[:, -1].astype(np.int64)
        self._weight = counts / counts.sum()
        rng = np.random.default_rng(self.seed)
        xs = _standardise(self._ctx)
        items = (pop.action_context if pop.action_context is not None
                 else np.eye(pop.n_actions))
        fs = _standardise(items)
        user = np.clip(_standardise(xs @ rng.normal(size=xs.shape[1]), axis=None), -3, 3)
        inter = (xs @ rng.normal(size=(xs.shape[1], fs.shape[1]))) @ fs.T
        inter -= np.average(inter, axis=0, weights=self._weight)
        inter /= max(float(np.sqrt(np.average((inter ** 2).mean(axis=1),
                                              weights=self._weight))), 1e-12)
        inter = np.clip(inter, -3, 3)  # no extreme click probabilities from rare features
        inter -= np.average(inter, axis=0, weights=self._weight)  # mean 0 for every item
        positive = table[table > 0]
        z = np.log(np.maximum(table, positive.min() / 2 if positive.size else 1e-6))
        self._z = _standardise(z, axis=None)[:, self._pos].T  # [combos, items]
        self._fixed = (self.user_scale * user[:, None] + self.interaction_scale * inter)
        self.intercept, self.gamma = self._calibrate()
        self.click_probs = self._probs(self.intercept, self.gamma)  # [combos, items]

    # ------------------------------------------------------------------ click model
    def _probs(self, c: float, gamma: float) -> np.ndarray:
        return _sigmoid(c + gamma * self._z + self._fixed)

    def _value_of(self, probs: np.ndarray, table: np.ndarray) -> float:
        per = (table[:, self._pos].T * probs).sum(axis=1)
        return float(per @ self._weight)

    def _calibrate(self) -> tuple[float, float]:
        uniform = np.full(self.target_table.shape, 1.0 / self.population.n_actions)

        def intercept(gamma: float) -> float:
            return float(brentq(lambda c: self._value_of(self._probs(c, gamma), uniform)
                                - self.logging_rate, -40.0, 40.0, xtol=1e-13))

        def gap(gamma: float) -> float:
            return self._value_of(self._probs(intercept(gamma), gamma),
                                  self.target_table) - self.target_rate

        lo, hi = -6.0, 6.0
        if gap(lo) * gap(hi) > 0:
            raise ConfigError(f"cannot calibrate: no item effect gives the target policy the "
                              f"rate {self.target_rate} when the uniform policy has "
                              f"{self.logging_rate}", key="target_rate")
        gamma = float(brentq(gap, lo, hi, xtol=1e-12))
        return intercept(gamma), gamma

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_obd(cls, root: str | Path, campaign: str = "all", *,
                 logging_rate: float | None = None, target_rate: float | None = None,
                 user_scale: float = 0.5, interaction_scale: float = 0.5,
                 seed: int = 0) -> SemiSyntheticOBD:
        """Built on the OBD sample at ``root`` (``obd/{random,bts}/{campaign}``).

        Population and items: the uniform-random log; evaluation policy: Bernoulli TS
        rebuilt from the BTS log (harmonic method); rates default to the two logs'
        observed click rates.
        """
        from recscope.data.loaders import load_obd

        root = Path(root)
        rnd = LoggedFeedback.from_interactions(load_obd(root / "random" / campaign))
        bts = LoggedFeedback.from_interactions(load_obd(root / "bts" / campaign))
        table = from_log(bts, rnd).probs[0]
        return cls(rnd, table,
                   rnd.on_policy_value() if logging_rate is None else logging_rate,
                   bts.on_policy_value() if target_rate is None else target_rate,
                   user_scale, interaction_scale, seed, f"semi-synthetic-obd-{campaign}")

    # ------------------------------------------------------------------ truth
    def value(self, table: np.ndarray) -> float:
        """Exact click rate per round of a context-free policy ``table`` [n_items, len_list]."""
        return self._value_of(self.click_probs, np.asarray(table, np.float64))

    def true_value(self) -> float:
        """Exact value of the evaluation policy (equals ``target_rate`` by calibration)."""
        return self.value(self.target_table)

    def logging_value(self) -> float:
        """Exact value of the uniform logging policy (equals ``logging_rate``)."""
        return float(self.click_probs.mean(axis=1) @ self._weight)

    def describe(self) -> dict[str, float | int | str]:
        return {"name": self.name, "population_rounds": self.population.n_rounds,
                "distinct_context_positions": len(self._weight),
                "n_items": self.population.n_actions, "len_list": self.population.len_list,
                "intercept": self.intercept, "gamma": self.gamma,
                "user_scale": self.user_scale, "interaction_scale": self.interaction_scale,
                "logging_value": self.logging_value(), "true_value": self.true_value(),
                "max_click_prob": float(self.click_probs.max())}

    # ------------------------------------------------------------------ simulation
    def log(self, n: int, rng: np.random.Generator, *, return_q: bool = True,
            ) -> tuple[LoggedFeedback, np.ndarray]:
        """``n`` rounds of the uniform-random logging policy, plus true q [n, n_items].

        ``return_q=False`` returns an empty q (saves ``8·n·n_items`` bytes on big logs).
        """
        if n <= 0:
            raise ConfigError(f"number of rounds must be positive, got {n}", key="n")
        pop = self.population
        rows = rng.integers(0, pop.n_rounds, n)
        combo = self._combo[rows]
        action = rng.integers(0, pop.n_actions, n).astype(np.int64)
        reward = (rng.random(n) < self.click_probs[combo, action]).astype(np.float64)
        fb = LoggedFeedback(
            context=pop.context[rows], action=action, position=self._pos[combo],
            reward=reward, pscore=np.full(n, 1.0 / pop.n_actions), n_actions=pop.n_actions,
            len_list=pop.len_list, item_ids=pop.item_ids, action_context=pop.action_context,
            user_index=None if pop.user_index is None else pop.user_index[rows],
            source=f"{self.name}(n={n})")
        return fb, (self.click_probs[combo] if return_q else np.empty((0, 0)))

    def target(self, fb: LoggedFeedback) -> ActionDist:
        """The evaluation policy on ``fb``'s rounds."""
        return ActionDist.context_free(self.target_table, fb.n_rounds, "target",
                                       {"kind": "semi-synthetic target"})

    def on_policy(self, n: int, rng: np.random.Generator, chunk: int = 2_000_000,
                  ) -> tuple[float, int]:
        """Mean click and number of clicks of ``n`` rounds served by the evaluation policy."""
        cdf = np.cumsum(self.target_table, axis=0)
        cdf /= cdf[-1]
        clicks = 0
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            combo = self._combo[rng.integers(0, self.population.n_rounds, m)]
            pos = self._pos[combo]
            u = rng.random(m)
            action = np.empty(m, np.int64)
            for k in range(cdf.shape[1]):
                sel = pos == k
                action[sel] = np.minimum(np.searchsorted(cdf[:, k], u[sel], side="right"),
                                         cdf.shape[0] - 1)
            clicks += int((rng.random(m) < self.click_probs[combo, action]).sum())
        return clicks / n, clicks


def resampled_estimates(fb: LoggedFeedback, dist: ActionDist, estimators: Sequence[str], *,
                        runs: int = 30, seed: int = 12345, reward_model: Kind = "logistic",
                        n_folds: int = 3,
                        on_resample: Callable[[int], None] | None = None,
                        ) -> dict[str, np.ndarray]:
    """Point estimates on ``runs`` bootstrap resamples of ``fb`` (OBP's protocol).

    On each resample (rows drawn with ``np.random.default_rng(seed)``) a ``reward_model``
    is fitted with ``n_folds``-fold cross-fitting (copies of one original round kept in
    one fold; model seed = resample index), when any estimator needs one, and every
    estimator gives its point estimate. Returns ``{estimator spec: [runs] estimates}``.
    """
    if runs <= 0:
        raise ConfigError(f"runs must be positive, got {runs}", key="runs")
    need_q = any(make_estimator(e).needs_model for e in estimators)
    rng = np.random.default_rng(seed)
    out = {e: np.empty(runs) for e in estimators}
    for b in range(runs):
        rows = rng.integers(0, fb.n_rounds, fb.n_rounds)
        sub = fb.take(rows)
        q = (RewardModel(kind=reward_model, n_folds=n_folds, seed=b).fit_predict(sub, groups=rows)
             if need_q else None)
        inp = Inputs(sub, dist.take(rows), q)
        for e in estimators:
            out[e][b] = make_estimator(e).point(inp)
        del sub, q, inp
        if on_resample is not None:
            on_resample(b)
    return out
