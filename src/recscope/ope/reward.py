"""Reward models for the direct-method and doubly robust estimators, fitted with cross-fitting.

``q̂(x, a, k)`` predicts the reward of item ``a`` at position ``k`` in context ``x`` from the
features ``[context, item features]`` (item features are the log's item side table, or a
one-hot item code when there is none), with one model per position as in the Open Bandit
Pipeline. Cross-fitting: the rounds are split into folds, and each fold's predictions come
from a model fitted on the other folds, so no round's prediction has seen its own reward
(which would bias DR towards DM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from recscope.errors import ConfigError
from recscope.ope.feedback import LoggedFeedback

Kind = Literal["logistic", "lightgbm", "ridge"]


@dataclass
class RewardModel:
    """Cross-fitted reward model; ``fit_predict(fb)`` gives ``q̂`` [n_rounds, n_actions].

    ``kind``: ``logistic`` (scikit-learn, binary rewards), ``lightgbm`` (classifier for
    binary rewards, regressor otherwise) or ``ridge`` (any reward). ``item_features``:
    ``auto`` (side-table features when present, else one-hot), ``onehot`` or ``both``.
    ``c`` is the inverse regularisation strength of logistic/ridge on standardised
    features (default 1, scikit-learn's); ``auto`` picks it per fitted model by an inner
    3-fold cross-validation of the log loss (squared error for ridge) on that model's
    training rounds only (about 30 times slower).
    """

    kind: Kind = "logistic"
    n_folds: int = 3
    per_position: bool = True
    item_features: Literal["auto", "onehot", "both"] = "auto"
    c: float | Literal["auto"] = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "lightgbm", "ridge"):
            raise ConfigError(f"unknown reward model {self.kind!r}; expected logistic, "
                              "lightgbm or ridge", key="reward_model")
        if self.n_folds < 2:
            raise ConfigError("cross-fitting needs n_folds >= 2", key="n_folds")
        self.log_loss: float | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_folds": self.n_folds, "per_position": self.per_position,
                "item_features": self.item_features, "c": self.c, "seed": self.seed,
                "cross_fitted_log_loss": self.log_loss}

    # ------------------------------------------------------------------ features
    def _item_matrix(self, fb: LoggedFeedback) -> np.ndarray:
        onehot = np.eye(fb.n_actions)
        ac = fb.action_context
        if self.item_features == "onehot" or ac is None:
            return onehot
        if self.item_features == "both":
            return np.hstack([ac, onehot])
        return ac

    @staticmethod
    def _standardise(m: np.ndarray) -> np.ndarray:
        sd = m.std(axis=0)
        return (m - m.mean(axis=0)) / np.where(sd > 0, sd, 1.0)

    # ------------------------------------------------------------------ fitting
    def fit_predict(self, fb: LoggedFeedback, groups: np.ndarray | None = None) -> np.ndarray:
        """Cross-fitted predictions for every action at each round's logged position.

        Rounds with the same ``groups`` value share a fold (default: the slate, when the
        log has slates), so copies of one round in a bootstrap resample, or the slots of
        one slate, never train the model that predicts them.
        """
        n, a = fb.n_rounds, fb.n_actions
        items = self._standardise(self._item_matrix(fb))
        ctx = self._standardise(fb.context) if fb.context.shape[1] else fb.context
        binary = bool(np.isin(fb.reward, (0.0, 1.0)).all()) and self.kind != "ridge"
        if self.kind == "logistic" and not binary:
            raise ConfigError("logistic reward model needs 0/1 rewards; use ridge or lightgbm",
                              key="reward_model")
        rng = np.random.default_rng(self.seed)
        if groups is None and fb.slate_id is not None:
            groups = fb.slate_id
        if groups is None:
            fold = rng.permutation(n) % self.n_folds
        else:
            _, g = np.unique(np.asarray(groups), return_inverse=True)
            fold = (rng.permutation(int(g.max()) + 1) % self.n_folds)[g]
        q = np.empty((n, a))
        groups = ([np.flatnonzero(fb.position == k) for k in range(fb.len_list)]
                  if self.per_position else [np.arange(n)])
        pos_cols = (np.zeros((n, 0)) if self.per_position
                    else np.eye(fb.len_list)[fb.position])
        loss, count = 0.0, 0
        for rows in groups:
            if rows.size == 0:
                continue
            for f in range(self.n_folds):
                test = rows[fold[rows] == f]
                train = rows[fold[rows] != f]
                if test.size == 0:
                    continue
                x_tr = np.hstack([ctx[train], items[fb.action[train]], pos_cols[train]])
                model = self._fit(x_tr, fb.reward[train], binary)
                for s in range(0, test.size, max(1, 2_000_000 // max(a, 1))):
                    chunk = test[s:s + max(1, 2_000_000 // max(a, 1))]
                    x = np.hstack([np.repeat(ctx[chunk], a, axis=0), np.tile(items, (len(chunk), 1)),
                                   np.repeat(pos_cols[chunk], a, axis=0)])
                    q[chunk] = self._predict(model, x, binary).reshape(len(chunk), a)
                if binary or (self.kind == "ridge" and np.isin(fb.reward, (0.0, 1.0)).all()):
                    p = np.clip(q[test, fb.action[test]], 1e-12, 1 - 1e-12)
                    r = fb.reward[test]
                    loss -= float(np.sum(r * np.log(p) + (1 - r) * np.log(1 - p)))
                    count += test.size
        self.log_loss = loss / count if count else None
        return q

    def _fit(self, x: np.ndarray, y: np.ndarray, binary: bool) -> Any:
        if binary and np.unique(y).size < 2:
            return ("constant", float(y.mean()) if y.size else 0.0)
        grid = np.logspace(-3, 2, 11)
        if self.kind == "logistic":
            from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
            from sklearn.model_selection import StratifiedKFold

            if self.c == "auto" and min(int(y.sum()), int((1 - y).sum())) >= 3:
                import warnings

                cv = StratifiedKFold(3, shuffle=True, random_state=self.seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    return LogisticRegressionCV(Cs=grid, cv=cv, scoring="neg_log_loss",
                                                max_iter=1000).fit(x, y)
            c = 1.0 if self.c == "auto" else float(self.c)
            return LogisticRegression(C=c, max_iter=1000).fit(x, y)
        if self.kind == "ridge":
            from sklearn.linear_model import Ridge, RidgeCV

            if self.c == "auto":
                return RidgeCV(alphas=1.0 / grid).fit(x, y)
            return Ridge(alpha=1.0 / float(self.c)).fit(x, y)
        import lightgbm as lgb

        params = dict(n_estimators=100, learning_rate=0.05, num_leaves=15,
                      min_child_samples=20, random_state=self.seed, deterministic=True,
                      force_row_wise=True, n_jobs=1, verbose=-1)
        model = lgb.LGBMClassifier(**params) if binary else lgb.LGBMRegressor(**params)
        return model.fit(x, y)

    @staticmethod
    def _predict(model: Any, x: np.ndarray, binary: bool) -> np.ndarray:
        if isinstance(model, tuple):
            return np.full(len(x), model[1])
        if binary:
            return model.predict_proba(x)[:, 1]
        return model.predict(x)
