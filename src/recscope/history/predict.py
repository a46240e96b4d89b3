"""Offline -> online: predict a candidate's online effect from its pre-experiment signals,
with a conformal interval, and triage it (run an experiment, skip it, run with more traffic).

* **Features**: the offline NDCG@10 and recall@20 deltas, the OPE estimate and the replay
  estimate (all measured before any experiment).
* **Target**: the true online effect when the history knows it (``true_<metric>``:
  simulator), else the experiment's readout (``online_<metric>_estimate``).
* **Models**: gradient boosting (scikit-learn, shallow trees) or a ridge regression on
  standardised features.
* **Interval**: split-conformal over candidate families: the absolute residuals of
  out-of-fold predictions (``GroupKFold`` by family, so a family never predicts itself)
  give the ``ceil((1-alpha)(n+1))``-th smallest residual as the half-width.
* **Triage**: a normal predictive distribution with the interval's spread;
  ``EV(run) = E[max(effect, 0)] - cost`` (an experiment lets you launch only winners,
  at a cost in effect units); skip when ``EV(run) <= 0``, run with more traffic when the
  predicted effect is smaller than the standard experiment's MDE, else run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from scipy import stats as sps

from recscope.errors import ConfigError, DataValidationError
from recscope.results import Effect, Result

FEATURES = ("offline_ndcg_estimate", "offline_recall_estimate", "ope_estimate",
            "replay_estimate")
SINGLE = {"offline NDCG delta": "offline_ndcg_estimate", "OPE": "ope_estimate",
          "replay": "replay_estimate"}
ModelKind = Literal["gbm", "ridge"]


def target_column(table: pa.Table, metric: str = "clicks") -> str:
    """``true_<metric>`` when the history knows the truth, else the online readout."""
    for c in (f"true_{metric}", f"online_{metric}_estimate"):
        if c in table.column_names and np.isfinite(_col(table, c)).any():
            return c
    raise DataValidationError(f"the history has no online results for metric {metric!r}",
                              column=f"online_{metric}_estimate")


def _col(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def design(table: pa.Table, metric: str = "clicks") -> dict[str, Any]:
    """Features, target, families and MDE of the usable rows (every value finite)."""
    missing = [c for c in FEATURES if c not in table.column_names]
    if missing:
        raise DataValidationError("the history lacks a pre-experiment signal",
                                  column=missing[0])
    tgt = target_column(table, metric)
    x = np.column_stack([_col(table, c) for c in FEATURES])
    y = _col(table, tgt)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    if ok.sum() < 10:
        raise DataValidationError(f"only {int(ok.sum())} candidates have every signal and an "
                                  "online result; at least 10 are needed", column=tgt)
    fam = np.asarray(table.column("family").to_pylist(), dtype=object)
    return {"x": x[ok], "y": y[ok], "family": fam[ok], "target": tgt,
            "mde": _col(table, f"online_{metric}_mde")[ok],
            "readout": _col(table, f"online_{metric}_estimate")[ok],
            "decision": np.asarray(table.column("decision").to_pylist()
                                   if "decision" in table.column_names
                                   else [None] * table.num_rows, dtype=object)[ok],
            "candidate_id": np.asarray(table.column("candidate_id").to_pylist(),
                                       dtype=object)[ok],
            "dropped": int((~ok).sum())}


def _model(kind: ModelKind, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gbm":
        return GradientBoostingRegressor(n_estimators=200, max_depth=2, learning_rate=0.05,
                                         subsample=0.8, min_samples_leaf=5, random_state=seed)
    if kind == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    raise ConfigError(f"unknown model {kind!r}; expected gbm or ridge", key="model")


def _folds(groups: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    k = min(k, len(set(groups.tolist())))
    if k < 2:
        raise DataValidationError("cross-validation by family needs at least two families",
                                  column="family")
    return list(GroupKFold(n_splits=k).split(groups, groups=groups))


def conformal_quantile(residuals: np.ndarray, alpha: float) -> float:
    """The split-conformal half-width: the ceil((1-alpha)(n+1))-th smallest |residual|."""
    r = np.sort(np.abs(residuals[np.isfinite(residuals)]))
    n = r.size
    k = math.ceil((1 - alpha) * (n + 1))
    return float(r[k - 1]) if 0 < k <= n else math.inf


@dataclass
class Predictor:
    """A fitted offline->online model with its conformal half-width."""

    kind: ModelKind
    model: Any
    q: float
    alpha: float
    target: str
    metric: str
    mde: float
    split_fingerprint: str | None
    n_train: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.atleast_2d(x)), dtype=np.float64)


def fit_predictor(table: pa.Table, *, metric: str = "clicks", kind: ModelKind = "ridge",
                  alpha: float = 0.1, folds: int = 5, seed: int = 0) -> Predictor:
    """Fit on the whole history; the conformal half-width comes from out-of-fold residuals
    by family."""
    d = design(table, metric)
    oof = np.full(d["y"].size, np.nan)
    for tr, te in _folds(d["family"], folds):
        oof[te] = _model(kind, seed).fit(d["x"][tr], d["y"][tr]).predict(d["x"][te])
    q = conformal_quantile(d["y"] - oof, alpha)
    model = _model(kind, seed).fit(d["x"], d["y"])
    mde = d["mde"][np.isfinite(d["mde"])]
    fps = [v for v in table.column("split_fingerprint").to_pylist() if v]
    return Predictor(kind, model, q, alpha, d["target"], metric,
                     float(np.median(mde)) if mde.size else math.nan,
                     fps[0] if fps else None, int(d["y"].size))


def triage(pred: float, q: float, alpha: float, mde: float, cost: float,
           max_traffic: float = 4.0) -> dict[str, Any]:
    """Recommendation and expected values from the predictive distribution
    ``N(pred, (q / z_{1-alpha/2})^2)``."""
    z = float(sps.norm.ppf(1 - alpha / 2))
    sd = q / z if math.isfinite(q) and q > 0 else math.inf
    if math.isinf(sd):
        p_pos, gain = 0.5, math.inf
    else:
        p_pos = float(sps.norm.cdf(pred / sd))
        gain = float(pred * sps.norm.cdf(pred / sd) + sd * sps.norm.pdf(pred / sd))
    ev_run = gain - cost
    out = {"p_positive": p_pos, "ev_run": ev_run, "ev_launch_blind": pred, "ev_skip": 0.0,
           "traffic": 1.0}
    if ev_run <= 0:
        out["recommendation"] = "skip"
    elif math.isfinite(mde) and 0 < abs(pred) < mde and pred > 0:
        out["recommendation"] = "run with more traffic"
        out["traffic"] = float(min(max_traffic, (mde / pred) ** 2))
    else:
        out["recommendation"] = "run"
    return out


@dataclass
class Prediction(Result):
    """A candidate's predicted online effect, its interval and the triage."""

    kind = "history_prediction"
    title = "Predicted online effect"

    candidate_id: str
    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    alpha: float
    triage: dict[str, Any]
    model: str
    n_train: int
    signals: dict[str, float] = field(default_factory=dict)

    def effects(self) -> list[Effect]:
        return [Effect(f"{self.metric} (relative)", self.estimate, self.ci_low, self.ci_high,
                       n=self.n_train, extra={"recommendation": self.triage["recommendation"],
                                              "p_positive": self.triage["p_positive"],
                                              "ev_run": self.triage["ev_run"]})]

    def rows(self) -> list[dict[str, Any]]:
        t = self.triage
        return [{"metric": f"{self.metric} (relative)", "estimate": self.estimate,
                 "ci_low": self.ci_low, "ci_high": self.ci_high,
                 "P(effect > 0)": t["p_positive"], "EV(run)": t["ev_run"],
                 "recommendation": t["recommendation"], "traffic": t["traffic"]}]

    def notes(self) -> list[str]:
        t = self.triage
        rec = t["recommendation"]
        if rec == "run with more traffic":
            rec += f" (x{t['traffic']:.1f})"
        return [f"{self.candidate_id}: predicted {self.estimate:+.1%} "
                f"({1 - self.alpha:.0%} interval {self.ci_low:+.1%} to {self.ci_high:+.1%}); "
                f"P(effect > 0) = {t['p_positive']:.2f}; expected value of running "
                f"{t['ev_run']:+.2%}; recommendation: {rec}"]


def predict_candidate(pred: Predictor, row: dict[str, Any], *, cost: float = 0.01,
                      file: str | None = None) -> Prediction:
    """Predict one candidate (a history row); its split must be the history's."""
    fp = row.get("split_fingerprint")
    if pred.split_fingerprint and fp and fp != pred.split_fingerprint:
        raise DataValidationError(
            f"the candidate's offline metrics come from split {fp}, the history's from "
            f"{pred.split_fingerprint}: deltas on different splits are not comparable",
            file=file, column="split_fingerprint")
    x = []
    for c in FEATURES:
        v = row.get(c)
        if v is None or not math.isfinite(float(v)):
            raise DataValidationError("the candidate lacks a pre-experiment signal",
                                      file=file, column=c)
        x.append(float(v))
    est = float(pred.predict(np.array(x))[0])
    t = triage(est, pred.q, pred.alpha, pred.mde, cost)
    return Prediction(str(row.get("candidate_id")), pred.metric, est, est - pred.q,
                      est + pred.q, pred.alpha, t, pred.kind, pred.n_train,
                      dict(zip(FEATURES, x, strict=True)))


# ---------------------------------------------------------------------- validation
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    return float(sps.spearmanr(a[ok], b[ok]).statistic)


def validate(table: pa.Table, *, metric: str = "clicks", kind: ModelKind = "ridge",
             alpha: float = 0.1, folds: int = 5, cost: float = 0.01,
             seed: int = 0) -> dict[str, Any]:
    """Held-out-family validation: outer ``GroupKFold`` by family; inside each training
    part an inner ``GroupKFold`` gives the conformal half-width. Returns Spearman per
    signal and for the learned model, directional accuracy, coverage and triage."""
    d = design(table, metric)
    x, y, fam = d["x"], d["y"], d["family"]
    pred = np.full(y.size, np.nan)
    half = np.full(y.size, np.nan)
    single = {name: np.full(y.size, np.nan) for name in SINGLE}
    for tr, te in _folds(fam, folds):
        inner = np.full(tr.size, np.nan)
        for itr, ite in _folds(fam[tr], folds):
            inner[ite] = _model(kind, seed).fit(x[tr][itr], y[tr][itr]).predict(x[tr][ite])
        q = conformal_quantile(y[tr] - inner, alpha)
        pred[te] = _model(kind, seed).fit(x[tr], y[tr]).predict(x[te])
        half[te] = q
        for name, col in SINGLE.items():  # a linear calibration of one signal
            j = FEATURES.index(col)
            coef = np.polyfit(x[tr, j], y[tr], 1)
            single[name][te] = np.polyval(coef, x[te, j])
    mde = d["mde"]
    big = np.isfinite(mde) & (np.abs(y) >= mde)
    covered = (y >= pred - half) & (y <= pred + half)
    out: dict[str, Any] = {
        "n": int(y.size), "dropped": d["dropped"], "families": len(set(fam.tolist())),
        "target": d["target"], "model": kind, "alpha": alpha,
        "spearman": {**{name: _spearman(v, y) for name, v in single.items()},
                     "learned": _spearman(pred, y)},
        "directional_accuracy": float(np.mean(np.sign(pred[big]) == np.sign(y[big])))
        if big.any() else math.nan,
        "n_beyond_mde": int(big.sum()),
        "median_mde": float(np.nanmedian(mde)) if np.isfinite(mde).any() else math.nan,
        "coverage": float(covered.mean()), "mean_half_width": float(np.mean(half)),
    }
    out["directional_accuracy_single"] = {
        name: float(np.mean(np.sign(v[big]) == np.sign(y[big]))) if big.any() else math.nan
        for name, v in single.items()}
    # triage against running every candidate
    med_mde = out["median_mde"]
    recs = [triage(float(p), float(h), alpha, med_mde, cost)["recommendation"]
            for p, h in zip(pred, half, strict=True)]
    skip = np.array([r == "skip" for r in recs])
    launched = np.array([v == "launch" for v in d["decision"]])
    good = y > 0
    out["triage"] = {
        "cost": cost, "candidates": int(y.size), "skipped": int(skip.sum()),
        "experiments_saved_share": float(skip.mean()),
        "more_traffic": int(sum(r == "run with more traffic" for r in recs)),
        "good_launches_all": int((launched & good).sum()),
        "good_launches_missed": int((skip & launched & good).sum()),
        "bad_launches_all": int((launched & ~good).sum()),
        "bad_launches_avoided": int((skip & launched & ~good).sum()),
        "true_positive_missed": int((skip & (y >= np.where(np.isfinite(mde), mde, np.inf))
                                     ).sum()),
        "value_all": float(np.sum(np.where(launched, y, 0.0))),
        "value_triaged": float(np.sum(np.where(launched & ~skip, y, 0.0))),
    }
    out["predictions"] = {"candidate_id": d["candidate_id"].tolist(), "family": fam.tolist(),
                          "truth": y.tolist(), "predicted": pred.tolist(),
                          "half_width": half.tolist()}
    return out
