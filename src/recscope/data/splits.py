"""Leak-free train/validation/test splits. Every split keeps the parent's vocabularies.

A *pair* is a (user, item) interaction pair. Pair-level splits (leave-last-N, random
holdout) put all rows of one pair in the same part, so a test pair never also appears in
training (repeated interactions cannot leak). Temporal and user-disjoint splits partition
rows by time or by user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from recscope.data.interactions import Interactions, _to_micros


@dataclass(frozen=True)
class Split:
    """Train, validation and test parts of one log (validation may be empty)."""

    train: Interactions
    validation: Interactions
    test: Interactions

    PARTS = ("train", "validation", "test")

    def save(self, path: str | Path, *, force: bool = False,
             info: Mapping[str, Any] | None = None) -> Path:
        """Write the split as a folder: ``train/``, ``validation/`` and ``test/`` are each a
        saved :class:`Interactions` folder (``interactions.parquet`` with the shared user
        and item vocabularies and the side tables), plus ``split.json`` (``info``).

        ``recscope.data.loaders.load("DIR/train")`` reads one part with its side tables;
        :func:`~recscope.data.loaders.load_split` reads all three. Written all or none; an
        existing non-empty folder needs ``force`` (only files recscope wrote are replaced).
        """
        from recscope.io import atomic_dir, check_out_dir, write_json

        check_out_dir(path, force=force)
        with atomic_dir(path, force=force) as tmp:
            for name, part in zip(self.PARTS, (self.train, self.validation, self.test),
                                  strict=True):
                part.save(tmp / name)
            write_json(tmp / "split.json", {**dict(info or {}), "layout": "recscope.split/2",
                                            "parts": self.summary()})
        return Path(path)

    def summary(self) -> dict[str, object]:
        return {name: {"n_interactions": len(part),
                       "n_users": int(np.unique(part.user_index).size),
                       "n_items": int(np.unique(part.item_index).size)}
                for name, part in (("train", self.train), ("validation", self.validation),
                                   ("test", self.test))}


def _parts(data: Interactions, label: np.ndarray) -> Split:
    """label: 0 train, 1 validation, 2 test; any other label drops the row."""
    return Split(data.select(label == 0), data.select(label == 1), data.select(label == 2))


def _pair_keys(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(unique pair id of every row, index of the pair's first row)."""
    key = data.user_index.astype(np.int64) * data.n_items + data.item_index
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return inverse, first


def temporal_split(data: Interactions, test_start: datetime | str,
                   validation_start: datetime | str | None = None, *,
                   drop_repeats: bool = False) -> Split:
    """Global cut: rows before ``validation_start`` train, then validation, then test
    from ``test_start`` on. No test row precedes the cut.

    A pair may recur after the cut (a re-watch, a re-purchase); ``drop_repeats=True``
    removes such later rows from validation and test, so no pair is in two parts."""
    ts = data.timestamps
    t_test = _to_micros(test_start, "test_start")
    label = np.where(ts >= t_test, 2, 0)
    if validation_start is not None:
        t_val = _to_micros(validation_start, "validation_start")
        if t_val > t_test:
            raise ValueError("validation_start must not be after test_start")
        label = np.where((ts >= t_val) & (ts < t_test), 1, label)
    return _parts(data, _drop_repeats(data, label) if drop_repeats else label)


def temporal_split_fraction(data: Interactions, test_fraction: float = 0.2,
                            validation_fraction: float = 0.0, *,
                            drop_repeats: bool = False) -> Split:
    """Global temporal cut placed at the quantiles that leave the given fractions of rows
    after it. Rows sharing the cut timestamp go to the later part (no test row precedes it).
    ``drop_repeats`` as in :func:`temporal_split`."""
    _check_fractions(test_fraction, validation_fraction)
    ts = np.sort(data.timestamps)
    n = len(ts)
    if n == 0:
        return _parts(data, np.zeros(0, dtype=np.int8))
    t_test = ts[min(n - 1, int(np.floor(n * (1 - test_fraction))))]
    label = np.where(data.timestamps >= t_test, 2, 0)
    if validation_fraction:
        t_val = ts[min(n - 1, int(np.floor(n * (1 - test_fraction - validation_fraction))))]
        label = np.where((data.timestamps >= t_val) & (label == 0), 1, label)
    return _parts(data, _drop_repeats(data, label) if drop_repeats else label)


def _drop_repeats(data: Interactions, label: np.ndarray) -> np.ndarray:
    """Label -1 (dropped) for validation/test rows whose pair is in an earlier part."""
    pair, _ = _pair_keys(data)
    n_pairs = int(pair.max()) + 1 if len(pair) else 0
    first_part = np.full(n_pairs, 3, dtype=np.int8)
    np.minimum.at(first_part, pair, label.astype(np.int8))
    return np.where(label > first_part[pair], -1, label)


def leave_last_n(data: Interactions, n: int = 1, validation_n: int = 0) -> Split:
    """Per user, the last ``n`` distinct items (by their last interaction) go to test and
    the ``validation_n`` before them to validation. Users with too few items keep at least
    one item in training."""
    if n < 1 or validation_n < 0:
        raise ValueError("n must be >= 1 and validation_n >= 0")
    pair, _ = _pair_keys(data)
    ts = data.timestamps
    n_pairs = int(pair.max()) + 1 if len(pair) else 0
    last_ts = np.full(n_pairs, np.iinfo(np.int64).min)
    np.maximum.at(last_ts, pair, ts)
    last_row = np.zeros(n_pairs, dtype=np.int64)
    np.maximum.at(last_row, pair, np.arange(len(pair)))
    pair_user = np.zeros(n_pairs, dtype=np.int64)
    pair_user[pair] = data.user_index
    # rank pairs within each user from the newest (0) backwards
    order = np.lexsort((-last_row, -last_ts, pair_user))
    u_sorted = pair_user[order]
    start = np.r_[0, np.flatnonzero(u_sorted[1:] != u_sorted[:-1]) + 1]
    counts = np.diff(np.r_[start, len(order)])
    rank_sorted = np.arange(len(order)) - np.repeat(start, counts)
    size_sorted = np.repeat(counts, counts)
    pair_label = np.zeros(n_pairs, dtype=np.int8)
    lab = np.where(rank_sorted < n, 2, np.where(rank_sorted < n + validation_n, 1, 0))
    lab = np.where(rank_sorted >= size_sorted - 1, 0, lab)  # the oldest pair stays in train
    pair_label[order] = lab
    return _parts(data, pair_label[pair])


def random_holdout(data: Interactions, test_fraction: float = 0.2,
                   validation_fraction: float = 0.0, *, seed: int = 0) -> Split:
    """Per user, a random ``test_fraction`` of their distinct items (stratified by user:
    round(fraction × count), at least one left in training) to test, likewise validation."""
    _check_fractions(test_fraction, validation_fraction)
    rng = np.random.default_rng(seed)
    pair, first = _pair_keys(data)
    n_pairs = len(first)
    pair_user = data.user_index[first].astype(np.int64)
    order = np.lexsort((rng.random(n_pairs), pair_user))
    u_sorted = pair_user[order]
    start = np.r_[0, np.flatnonzero(u_sorted[1:] != u_sorted[:-1]) + 1] if n_pairs else \
        np.zeros(0, dtype=np.int64)
    counts = np.diff(np.r_[start, n_pairs])
    rank = np.arange(n_pairs) - np.repeat(start, counts)
    size = np.repeat(counts, counts)
    n_test = np.minimum(np.round(size * test_fraction), size - 1)
    n_val = np.minimum(np.round(size * validation_fraction), size - 1 - n_test)
    lab = np.where(rank < n_test, 2, np.where(rank < n_test + n_val, 1, 0)).astype(np.int8)
    pair_label = np.zeros(n_pairs, dtype=np.int8)
    pair_label[order] = lab
    return _parts(data, pair_label[pair])


def user_split(data: Interactions, test_fraction: float = 0.2, validation_fraction: float = 0.0,
               *, seed: int = 0) -> Split:
    """Disjoint users: a random ``test_fraction`` of active users and all their rows to
    test, likewise validation; the rest train."""
    _check_fractions(test_fraction, validation_fraction)
    rng = np.random.default_rng(seed)
    active = np.unique(data.user_index)
    perm = rng.permutation(active)
    n_test = round(len(active) * test_fraction)
    n_val = round(len(active) * validation_fraction)
    user_label = np.zeros(data.n_users, dtype=np.int8)
    user_label[perm[:n_test]] = 2
    user_label[perm[n_test:n_test + n_val]] = 1
    return _parts(data, user_label[data.user_index])


def _check_fractions(test: float, validation: float) -> None:
    if not (0 < test < 1) or not (0 <= validation < 1) or test + validation >= 1:
        raise ValueError(f"fractions must satisfy 0 < test < 1, 0 <= validation, and "
                         f"test + validation < 1; got test={test}, validation={validation}")
