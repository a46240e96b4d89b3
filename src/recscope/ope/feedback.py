"""Logged bandit feedback: what a logging policy showed, where, with what chance, and the reward.

One *round* is one logged impression: a context (the user's features), an action (the item
index), the 0-based position it was shown at, the observed reward and the logging policy's
propensity of showing that item at that position. Rounds that belong to one slate share a
``slate_id``; slate estimators further need the logging probability of the logged prefix
(``pscore_cascade``: items at positions 0..k) and of the whole slate (``pscore_slate``).

Built from the canonical interaction schema (``value`` is the reward, ``position`` and
``propensity`` are required, ``session_id`` names the slate) through
:meth:`LoggedFeedback.from_interactions`; every propensity is checked to be in (0, 1] and
errors name the file, the column and the first bad row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from recscope.data.interactions import Interactions
from recscope.errors import DataValidationError

#: Columns of the canonical schema (plus extras) that carry slate-level logging probabilities.
CASCADE_COLUMN = "propensity_cascade"
SLATE_COLUMN = "propensity_slate"


@dataclass(frozen=True)
class LoggedFeedback:
    """Logged bandit feedback as aligned numpy arrays (one entry per round).

    ``context`` [n, d] float64 (d may be 0), ``action`` [n] int64 in [0, n_actions),
    ``position`` [n] int64 in [0, len_list), ``reward`` [n] float64, ``pscore`` [n] in (0, 1].
    ``item_ids`` maps an action index to its external item id, so a policy known on another
    log (or a model) can be matched by id. ``timestamp`` is epoch microseconds.
    """

    context: np.ndarray
    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    n_actions: int
    len_list: int
    item_ids: np.ndarray
    action_context: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    slate_id: np.ndarray | None = None
    pscore_cascade: np.ndarray | None = None
    pscore_slate: np.ndarray | None = None
    user_index: np.ndarray | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.action)
        for name in ("position", "reward", "pscore"):
            if len(getattr(self, name)) != n:
                raise DataValidationError(f"{len(getattr(self, name))} values for {n} rounds",
                                          file=self.source, column=name)
        if self.context.ndim != 2 or self.context.shape[0] != n:
            raise DataValidationError(f"context must be [n_rounds, d], got {self.context.shape}",
                                      file=self.source, column="context")
        check_propensity(self.pscore, "propensity", self.source)
        for name, col in (("pscore_cascade", CASCADE_COLUMN), ("pscore_slate", SLATE_COLUMN)):
            values = getattr(self, name)
            if values is not None:
                check_propensity(values, col, self.source)
        _check_range(self.action, self.n_actions, "item_id", self.source)
        _check_range(self.position, self.len_list, "position", self.source)
        bad = np.flatnonzero(~np.isfinite(self.reward))
        if bad.size:
            raise DataValidationError("missing or non-finite reward", file=self.source,
                                      column="value", row=int(bad[0]))

    # ------------------------------------------------------------------ views
    @property
    def n_rounds(self) -> int:
        return len(self.action)

    @property
    def is_slate(self) -> bool:
        """True when rounds are grouped into slates (``slate_id`` present)."""
        return self.slate_id is not None

    def on_policy_value(self) -> float:
        """Observed mean reward per round: the logging policy's own (on-policy) value."""
        return float(self.reward.mean()) if self.n_rounds else float("nan")

    def fingerprint(self) -> str:
        """Short hash of the arrays, for tracking and caching."""
        h = hashlib.sha256()
        for arr in (self.action, self.position, self.reward, self.pscore, self.context):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    def take(self, rows: np.ndarray) -> LoggedFeedback:
        """The rounds at ``rows`` (a bootstrap resample, a fold), same action space."""
        rows = np.asarray(rows, dtype=np.int64)

        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return replace(self, context=self.context[rows], action=self.action[rows],
                       position=self.position[rows], reward=self.reward[rows],
                       pscore=self.pscore[rows], timestamp=sub(self.timestamp),
                       slate_id=sub(self.slate_id), pscore_cascade=sub(self.pscore_cascade),
                       pscore_slate=sub(self.pscore_slate), user_index=sub(self.user_index))

    def slates(self) -> tuple[np.ndarray, np.ndarray]:
        """(slate index per round in 0..n_slates-1, rounds ordered by slate then position).

        Raises when a slate repeats a position: slate estimators need one item per slot.
        """
        if self.slate_id is None:
            raise DataValidationError("slate estimators need slates: no session_id column",
                                      file=self.source, column="session_id")
        _, slate = np.unique(self.slate_id, return_inverse=True)
        order = np.lexsort((self.position, slate))
        s, p = slate[order], self.position[order]
        dup = np.flatnonzero((s[1:] == s[:-1]) & (p[1:] == p[:-1]))
        if dup.size:
            row = int(order[dup[0] + 1])
            raise DataValidationError(f"slate {self.slate_id[row]!r} has two items at position "
                                      f"{int(p[dup[0]])}", file=self.source, column="position",
                                      row=row)
        return slate.astype(np.int64), order

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_interactions(
        cls,
        data: Interactions,
        *,
        context_columns: list[str] | None = None,
        user_feature_context: bool = True,
        len_list: int | None = None,
        source: str | None = None,
    ) -> LoggedFeedback:
        """Feedback from a canonical log: reward = ``value``, slates = ``session_id``.

        The context joins the user side table's features (text features one-hot encoded,
        first level dropped; numbers as they are) with the row-level ``context_columns``.
        The action space is the item vocabulary; the item side table (when present)
        becomes ``action_context``. ``source`` (the file the log came from) names it in
        errors; it defaults to the log's name.
        """
        file = source or data.name or None
        table = data.table
        for col in ("position", "propensity"):
            if col not in table.column_names:
                raise DataValidationError(
                    f"off-policy evaluation needs a {col!r} column; found {table.column_names}",
                    file=file, column=col)
        position = _column(table, "position", file).astype(np.int64)
        pscore = _column(table, "propensity", file).astype(np.float64)
        check_propensity(pscore, "propensity", file)
        reward = _column(table, "value", file).astype(np.float64)
        parts: list[np.ndarray] = []
        if user_feature_context and data.user_features is not None:
            feats = encode_features(data.user_features, key="user_id")
            order = data.users.index(data.user_features.column("user_id"))
            aligned = np.zeros((data.n_users, feats.shape[1]))
            aligned[order] = feats
            parts.append(aligned[data.user_index])
        for name in context_columns or []:
            if name not in table.column_names:
                raise DataValidationError(f"context column not in the log; found "
                                          f"{table.column_names}", file=file, column=name)
            parts.append(_column(table, name, file).astype(np.float64)[:, None])
        n = len(data)
        context = np.hstack(parts) if parts else np.zeros((n, 0))
        action_context = None
        if data.item_features is not None:
            feats = encode_features(data.item_features, key="item_id")
            order = data.items.index(data.item_features.column("item_id"))
            action_context = np.zeros((data.n_items, feats.shape[1]))
            action_context[order] = feats
        extra: dict[str, np.ndarray | None] = {}
        for attr, col in (("pscore_cascade", CASCADE_COLUMN), ("pscore_slate", SLATE_COLUMN)):
            extra[attr] = (_column(table, col, file).astype(np.float64)
                           if col in table.column_names else None)
        slate_id = (np.asarray(table.column("session_id").to_pandas().astype(str))
                    if "session_id" in table.column_names else None)
        k = int(position.max()) + 1 if n else 1
        if len_list is not None:
            k = max(k, len_list)
        return cls(context=context, action=data.item_index.astype(np.int64), position=position,
                   reward=reward, pscore=pscore, n_actions=data.n_items, len_list=k,
                   item_ids=np.asarray(data.items.ids.to_pylist(), dtype=object),
                   action_context=action_context, timestamp=data.timestamps,
                   slate_id=slate_id, user_index=data.user_index.astype(np.int64),
                   source=file, **extra)


def check_propensity(values: np.ndarray, column: str, file: str | None) -> None:
    """Raise naming the first row whose propensity is missing, zero, negative or above 1."""
    v = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise DataValidationError("missing propensity (a logging probability is required for "
                                  "every round)", file=file, column=column, row=int(bad[0]))
    bad = np.flatnonzero((v <= 0.0) | (v > 1.0))
    if bad.size:
        raise DataValidationError(f"propensity {v[bad[0]]!r} outside (0, 1]", file=file,
                                  column=column, row=int(bad[0]))


def encode_features(table: pa.Table, *, key: str) -> np.ndarray:
    """A side table's non-key columns as numbers: text one-hot (first level dropped)."""
    import pandas as pd

    df = table.drop_columns([key]).to_pandas()
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    num = [c for c in df.columns if c not in text]
    parts = [df[num].to_numpy(dtype=np.float64)] if num else []
    if text:
        parts.append(pd.get_dummies(df[text].astype(str), drop_first=True).to_numpy(
            dtype=np.float64))
    return np.hstack(parts) if parts else np.zeros((len(df), 0))


def _column(table: pa.Table, name: str, file: str | None) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        import pyarrow.compute as pc

        row = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
        raise DataValidationError("missing value", file=file, column=name, row=row)
    return col.to_numpy()


def _check_range(values: np.ndarray, upper: int, column: str, file: str | None) -> None:
    bad = np.flatnonzero((values < 0) | (values >= upper))
    if bad.size:
        raise DataValidationError(f"{values[bad[0]]} outside [0, {upper})", file=file,
                                  column=column, row=int(bad[0]))
