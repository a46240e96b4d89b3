"""Off-policy estimators with bootstrap intervals and weight diagnostics.

Every estimator reduces the log to a few per-round columns whose sums give the estimate
(e.g. IPS: ``[w·r, 1]`` → ``Σ w·r / n``; SNIPS: ``[w·r, w]`` → ``Σ w·r / Σ w``). The
bootstrap resamples units (rounds, or whole slates when the log has slates) and recomputes
the same ratio from resampled sums, so self-normalised estimators get their own
non-linear intervals. Notation: ``w = π(a_i at k_i | x_i) / μ_i`` (evaluation over logging
propensity), ``q̂`` cross-fitted reward-model predictions at the logged position for every
action, ``v̂_i = Σ_a π(a | x_i, k_i) q̂(x_i, a, k_i)``.

Standard estimators estimate the mean reward per round (per impression); slate
estimators estimate the expected sum of rewards over the slate's positions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from recscope.errors import ConfigError
from recscope.ope.action_dists import ActionDist, RankingPolicy, SlateProbs
from recscope.ope.feedback import LoggedFeedback
from recscope.results import Effect

Combine = Callable[[np.ndarray], np.ndarray]


#: The metric name of every estimate row: the policy's expected reward per round.
VALUE = "policy_value"


@dataclass
class Inputs:
    """What the estimators read, computed once per (log, policy, reward model)."""

    fb: LoggedFeedback
    dist: ActionDist
    q_hat: np.ndarray | None = None
    slate: SlateProbs | None = None
    _cache: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dist.check(self.fb)
        if self.q_hat is not None and self.q_hat.shape != (self.fb.n_rounds, self.fb.n_actions):
            raise ConfigError(f"reward-model predictions must be [n_rounds, n_actions] = "
                              f"{(self.fb.n_rounds, self.fb.n_actions)}, got {self.q_hat.shape}",
                              key="q_hat")

    @property
    def pi(self) -> np.ndarray:
        if "pi" not in self._cache:
            self._cache["pi"] = self.dist.logged(self.fb)
        return self._cache["pi"]

    @property
    def w(self) -> np.ndarray:
        if "w" not in self._cache:
            self._cache["w"] = self.pi / self.fb.pscore
        return self._cache["w"]

    def need_q(self, who: str) -> np.ndarray:
        if self.q_hat is None:
            raise ConfigError(f"estimator {who!r} needs reward-model predictions", key="q_hat")
        return self.q_hat

    @property
    def q_logged(self) -> np.ndarray:
        if "ql" not in self._cache:
            q = self.need_q("model-based")
            self._cache["ql"] = q[np.arange(self.fb.n_rounds), self.fb.action]
        return self._cache["ql"]

    @property
    def v(self) -> np.ndarray:
        """Σ_a π(a | x, k) q̂(x, a, k) per round (the direct-method term)."""
        if "v" not in self._cache:
            q = self.need_q("model-based")
            n = self.fb.n_rounds
            out = np.empty(n)
            step = 200_000
            for s in range(0, n, step):
                rows = np.arange(s, min(s + step, n))
                pa = self.dist.at(rows, self.fb.position[rows])
                out[rows] = np.einsum("ij,ij->i", pa, q[rows])
            self._cache["v"] = out
        return self._cache["v"]


class Estimator(ABC):
    """Base class: subclasses give per-round columns and how their sums combine."""

    name: ClassVar[str] = "estimator"
    is_slate: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False

    @abstractmethod
    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        """Per-round columns [n, c] and a function of their (resampled) sums [B, c] -> [B]."""

    def label(self) -> str:
        return self.name

    def weights(self, inp: Inputs) -> np.ndarray:
        """The importance weights behind the estimate (for diagnostics)."""
        return inp.w

    def extra_diagnostics(self, inp: Inputs) -> dict[str, Any]:
        return {}

    def estimate(self, fb: LoggedFeedback, dist: ActionDist, q_hat: np.ndarray | None = None,
                 *, slate: SlateProbs | None = None, n_bootstrap: int = 500,
                 alpha: float = 0.05, seed: int | np.random.Generator = 0) -> Effect:
        """Point estimate, bootstrap interval and diagnostics on ``fb`` under ``dist``."""
        return self.run(Inputs(fb, dist, q_hat, slate), n_bootstrap=n_bootstrap, alpha=alpha,
                        seed=seed)

    def point(self, inp: Inputs) -> float:
        """The point estimate only (no bootstrap, no diagnostics)."""
        cols, combine = self.columns(inp)
        return float(combine(cols.sum(axis=0)[None])[0])

    def run(self, inp: Inputs, *, n_bootstrap: int = 500, alpha: float = 0.05,
            seed: int | np.random.Generator = 0) -> Effect:
        cols, combine = self.columns(inp)
        value = float(combine(cols.sum(axis=0)[None])[0])
        units = _units(inp.fb) if (self.is_slate or inp.fb.slate_id is not None) else None
        boot = bootstrap_sums(cols, combine, n_bootstrap, seed, units)
        lo, hi = (np.nanquantile(boot, [alpha / 2, 1 - alpha / 2]) if boot.size
                  else (np.nan, np.nan))
        diag = weight_diagnostics(self.weights(inp), inp.pi if not self.is_slate else None)
        diag.update(self.extra_diagnostics(inp))
        diag["n_rounds"] = inp.fb.n_rounds
        diag["n_bootstrap"] = n_bootstrap
        se = float(np.nanstd(boot, ddof=1)) if boot.size > 1 else float("nan")
        return Effect(VALUE, value, float(lo), float(hi), se, n=inp.fb.n_rounds,
                      extra={"estimator": self.label(), "diagnostics": diag})


def _units(fb: LoggedFeedback) -> np.ndarray:
    slate, _ = fb.slates()
    return slate


def bootstrap_sums(cols: np.ndarray, combine: Combine, n_bootstrap: int,
                   seed: int | np.random.Generator, units: np.ndarray | None = None,
                   ) -> np.ndarray:
    """Estimates from ``n_bootstrap`` resamples of units (rows, or clusters ``units``)."""
    if n_bootstrap <= 0:
        return np.empty(0)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if units is not None:
        n_units = int(units.max()) + 1 if len(units) else 0
        agg = np.zeros((n_units, cols.shape[1]))
        np.add.at(agg, units, cols)
        cols = agg
    n = cols.shape[0]
    sums = np.empty((n_bootstrap, cols.shape[1]))
    per = max(1, 4_000_000 // max(n, 1))  # resamples drawn together (bounded memory)
    for b0 in range(0, n_bootstrap, per):
        nb = min(per, n_bootstrap - b0)
        flat = rng.integers(0, n, (nb, n)) + (np.arange(nb) * n)[:, None]
        counts = np.bincount(flat.ravel(), minlength=nb * n).reshape(nb, n)
        sums[b0:b0 + nb] = counts.astype(np.float64) @ cols  # resampled column sums
    with np.errstate(divide="ignore", invalid="ignore"):
        return combine(sums)


def weight_diagnostics(w: np.ndarray, pi: np.ndarray | None) -> dict[str, Any]:
    """Effective sample size, weight statistics and the share outside the policy's support."""
    n = len(w)
    s1, s2 = float(w.sum()), float((w * w).sum())
    ess = s1 * s1 / s2 if s2 > 0 else 0.0
    out: dict[str, Any] = {
        "ess": ess, "ess_ratio": ess / n if n else float("nan"),
        "weight_mean": float(w.mean()) if n else float("nan"),
        "weight_std": float(w.std()) if n else float("nan"),
        "weight_min": float(w.min()) if n else float("nan"),
        "weight_max": float(w.max()) if n else float("nan"),
        "weight_p99": float(np.quantile(w, 0.99)) if n else float("nan"),
    }
    if pi is not None:
        outside = pi <= 0
        out["outside_support_rounds"] = int(outside.sum())
        out["outside_support_share"] = float(outside.mean()) if n else float("nan")
    return out


def _mean(cols: list[np.ndarray]) -> tuple[np.ndarray, Combine]:
    """Columns [x, 1]: the plain mean of x."""
    c = np.column_stack([*cols, np.ones(len(cols[0]))])
    return c, lambda s: s[:, : len(cols)].sum(axis=1) / s[:, -1]


# ---------------------------------------------------------------------- standard
class DirectMethod(Estimator):
    """DM: mean of ``v̂`` (unbiased only when the reward model is right)."""

    name = "dm"
    needs_model = True

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        return _mean([inp.v])


class IPS(Estimator):
    """Inverse propensity scoring: mean of ``w·r`` (unbiased given correct propensities)."""

    name = "ips"

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        return _mean([inp.w * inp.fb.reward])


class ClippedIPS(Estimator):
    """IPS with weights capped at ``max_weight`` (less variance, downward bias)."""

    name = "clipped-ips"

    def __init__(self, max_weight: float = 10.0) -> None:
        if max_weight <= 0:
            raise ConfigError("max_weight must be > 0", key="clipped-ips")
        self.max_weight = float(max_weight)

    def label(self) -> str:
        return f"{self.name}:{self.max_weight:g}"

    def weights(self, inp: Inputs) -> np.ndarray:
        return np.minimum(inp.w, self.max_weight)

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        return _mean([self.weights(inp) * inp.fb.reward])

    def extra_diagnostics(self, inp: Inputs) -> dict[str, Any]:
        return {"clipped_share": float((inp.w > self.max_weight).mean())}


class SNIPS(Estimator):
    """Self-normalised IPS: ``Σ w·r / Σ w``."""

    name = "snips"

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        c = np.column_stack([inp.w * inp.fb.reward, inp.w])
        return c, lambda s: s[:, 0] / s[:, 1]


class DR(Estimator):
    """Doubly robust: ``v̂ + w·(r − q̂)``."""

    name = "dr"
    needs_model = True

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        return _mean([inp.v, inp.w * (inp.fb.reward - inp.q_logged)])


class SNDR(Estimator):
    """Self-normalised DR: ``mean(v̂) + Σ w·(r − q̂) / Σ w``."""

    name = "sndr"
    needs_model = True

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        c = np.column_stack([inp.v, np.ones(inp.fb.n_rounds),
                             inp.w * (inp.fb.reward - inp.q_logged), inp.w])
        return c, lambda s: s[:, 0] / s[:, 1] + s[:, 2] / s[:, 3]


class _Tuned(Estimator):
    """Shared hyperparameter choice: a fixed value, or ``auto`` (least estimated MSE).

    ``auto`` picks, from a grid, the value minimising ``(V̂_h − V̂_DR)² + Var̂(V̂_h)`` with
    DR (unbiased) as the bias reference, as in Su et al. (2020); the choice is reported.
    """

    def __init__(self, param: float | str = "auto") -> None:
        if param != "auto":
            param = float(param)
            if param <= 0:
                raise ConfigError(f"{self.name} hyperparameter must be > 0", key=self.name)
        self.param = param
        self._chosen: float | None = None

    def label(self) -> str:
        return self.name if self.param == "auto" else f"{self.name}:{self.param:g}"

    @abstractmethod
    def _corr_weight(self, w: np.ndarray, h: float) -> np.ndarray:
        """The weight applied to ``r − q̂`` under hyperparameter ``h``."""

    @abstractmethod
    def _grid(self, w: np.ndarray) -> np.ndarray: ...

    def _choose(self, inp: Inputs) -> float:
        if self.param != "auto":
            return float(self.param)
        resid = inp.fb.reward - inp.q_logged
        dr = inp.v + inp.w * resid
        v_dr = dr.mean()
        n = inp.fb.n_rounds
        best, best_mse = float("inf"), float("inf")
        for h in self._grid(inp.w):
            t = inp.v + self._corr_weight(inp.w, h) * resid
            mse = (t.mean() - v_dr) ** 2 + t.var(ddof=1) / n
            if mse < best_mse:
                best, best_mse = float(h), float(mse)
        return best

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        h = self._choose(inp)
        self._chosen = h
        return _mean([inp.v, self._corr_weight(inp.w, h) * (inp.fb.reward - inp.q_logged)])

    def extra_diagnostics(self, inp: Inputs) -> dict[str, Any]:
        return {"hyperparameter": self._chosen}


class SwitchDR(_Tuned):
    """Switch-DR (Wang et al. 2017): DR where ``w ≤ τ``, DM where ``w > τ``."""

    name = "switch-dr"
    needs_model = True

    def _corr_weight(self, w: np.ndarray, h: float) -> np.ndarray:
        return np.where(w <= h, w, 0.0)

    def _grid(self, w: np.ndarray) -> np.ndarray:
        pos = w[w > 0]
        if not pos.size:
            return np.array([1.0])
        return np.unique(np.r_[np.quantile(pos, [0.5, 0.75, 0.9, 0.95, 0.99]), pos.max()])

    def extra_diagnostics(self, inp: Inputs) -> dict[str, Any]:
        tau = self._chosen if self._chosen is not None else self._choose(inp)
        return {"hyperparameter": tau, "switched_share": float((inp.w > tau).mean())}


class DRos(_Tuned):
    """DR with optimistic shrinkage (Su et al. 2020): weight ``λw / (w² + λ)``."""

    name = "dr-os"
    needs_model = True

    def _corr_weight(self, w: np.ndarray, h: float) -> np.ndarray:
        return h * w / (w * w + h)

    def _grid(self, w: np.ndarray) -> np.ndarray:
        scale = max(float(np.mean(w * w)), 1e-12)
        return scale * np.logspace(-3, 3, 25)


# ---------------------------------------------------------------------- slates
class _SlateEstimator(Estimator):
    is_slate = True
    _prob: ClassVar[str] = "marginal"
    _logged: ClassVar[str] = "pscore"

    def _probs(self, inp: Inputs) -> SlateProbs:
        if inp.slate is None:
            raise ConfigError(f"estimator {self.name!r} needs slate probabilities of the "
                              "evaluation policy", key="policy")
        return inp.slate

    def weights(self, inp: Inputs) -> np.ndarray:
        sp = self._probs(inp)
        pi = getattr(sp, self._prob)
        logged = getattr(inp.fb, self._logged)
        if pi is None:
            raise ConfigError(f"the evaluation policy gives no {self._prob} probabilities "
                              f"({self.name} needs them)", key="policy")
        if logged is None:
            from recscope.errors import DataValidationError

            column = {"pscore_cascade": "propensity_cascade",
                      "pscore_slate": "propensity_slate"}.get(self._logged, "propensity")
            raise DataValidationError(f"{self.name} needs the logging probability column "
                                      f"{column!r}", file=inp.fb.source, column=column)
        return pi / logged

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        w = self.weights(inp)
        first = (inp.fb.position == 0).astype(np.float64)
        c = np.column_stack([w * inp.fb.reward, first])
        return c, lambda s: s[:, 0] / s[:, 1]

    def extra_diagnostics(self, inp: Inputs) -> dict[str, Any]:
        sp = self._probs(inp)
        pi = getattr(sp, self._prob)
        out = pi <= 0
        return {"outside_support_rounds": int(out.sum()),
                "outside_support_share": float(out.mean())}


class IndependentIPS(_SlateEstimator):
    """IIPS (Li et al. 2018): per-position weights ``π(a_k at k) / μ(a_k at k)``."""

    name = "iips"


class RewardInteractionIPS(_SlateEstimator):
    """RIPS (McInerney et al. 2020): prefix weights ``π(a_0..a_k) / μ(a_0..a_k)``."""

    name = "rips"
    _prob = "prefix"
    _logged = "pscore_cascade"


class SlateIPS(_SlateEstimator):
    """Standard slate IPS: the whole slate's weight ``π(slate) / μ(slate)`` on every position."""

    name = "sips"
    _prob = "slate"
    _logged = "pscore_slate"


class CascadeDR(_SlateEstimator):
    """Cascade doubly robust (Kiyohara et al. 2022) with prefix weights.

    Per slate: ``Σ_k w_{0:k} (r_k − Q̂_k) + w_{0:k−1} V̂_k`` with
    ``Q̂_k = q̂_k(a_k) + F_{k+1}``, ``V̂_k = Σ_a π(a | logged prefix) q̂_k(a) + F_{k+1}`` and
    ``F_{k+1} = Σ_{l>k} Σ_a π(a at l) q̂_l(a)`` (the reward model's value of the rest of
    the slate). Unbiased for any ``q̂`` given correct prefix probabilities.
    """

    name = "cascade-dr"
    _prob = "prefix"
    _logged = "pscore_cascade"
    needs_model = True

    def columns(self, inp: Inputs) -> tuple[np.ndarray, Combine]:
        from recscope.ope.action_dists import slate_matrix

        sp = self._probs(inp)
        w = self.weights(inp)
        q = inp.need_q(self.name)
        fb = inp.fb
        _, rounds = slate_matrix(fb)
        e = inp.v  # per round: Σ_a π(a at k) q̂_k(a)
        e_mat = e[rounds]
        future = np.cumsum(e_mat[:, ::-1], axis=1)[:, ::-1] - e_mat  # Σ_{l>k}
        f = np.empty(fb.n_rounds)
        f[rounds.ravel()] = future.ravel()
        w_mat = w[rounds]
        w_prev = np.ones_like(w_mat)
        w_prev[:, 1:] = w_mat[:, :-1]
        wp = np.empty(fb.n_rounds)
        wp[rounds.ravel()] = w_prev.ravel()
        assert sp.cond is not None
        v_cond = np.einsum("ij,ij->i", sp.cond, q) + f
        q_at = inp.q_logged + f
        terms = w * (fb.reward - q_at) + wp * v_cond
        first = (fb.position == 0).astype(np.float64)
        c = np.column_stack([terms, first])
        return c, lambda s: s[:, 0] / s[:, 1]


# ---------------------------------------------------------------------- registry
STANDARD: dict[str, type[Estimator]] = {
    "dm": DirectMethod, "ips": IPS, "clipped-ips": ClippedIPS, "snips": SNIPS, "dr": DR,
    "sndr": SNDR, "switch-dr": SwitchDR, "dr-os": DRos,
}
SLATE: dict[str, type[Estimator]] = {
    "iips": IndependentIPS, "rips": RewardInteractionIPS, "sips": SlateIPS,
    "cascade-dr": CascadeDR,
}
ESTIMATORS: dict[str, type[Estimator]] = {**STANDARD, **SLATE}


def make_estimator(spec: str) -> Estimator:
    """``name`` or ``name:param`` (``clipped-ips:20``, ``switch-dr:50``, ``dr-os:auto``)."""
    name, _, param = spec.strip().lower().partition(":")
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {name!r}; known: {sorted(ESTIMATORS)}",
                          key="estimator")
    cls = ESTIMATORS[name]
    if not param:
        return cls()
    if cls not in (ClippedIPS, SwitchDR, DRos):
        raise ConfigError(f"estimator {name!r} takes no parameter", key="estimator")
    if param == "auto" and cls is not ClippedIPS:
        return cls("auto")  # type: ignore[call-arg]
    try:
        value = float(param)
    except ValueError:
        raise ConfigError(f"parameter of {name!r} must be a number, not {param!r}",
                          key="estimator") from None
    return cls(value)  # type: ignore[call-arg]


def slate_probs_for(policy: ActionDist | RankingPolicy, fb: LoggedFeedback) -> SlateProbs:
    """Slate probabilities of ``policy`` on ``fb``'s slates (marginals only for ActionDist)."""
    if isinstance(policy, RankingPolicy):
        return policy.slate_probs(fb)
    return SlateProbs(policy.logged(fb), None, None, None)
