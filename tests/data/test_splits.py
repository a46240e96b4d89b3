"""Property tests of the splits: parts partition the rows, no (user, item) pair is in two
parts, temporal parts respect the cut, user parts are disjoint, seeds make them repeatable."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recscope.data import (
    Interactions,
    Split,
    leave_last_n,
    random_holdout,
    temporal_split,
    temporal_split_fraction,
    user_split,
)
from tests.conftest import data_path, make_log

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


@st.composite
def logs(draw: st.DrawFn) -> Interactions:
    """Small logs with repeated pairs, tied timestamps and users of one interaction."""
    n = draw(st.integers(1, 60))
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 8))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    table = pa.table({
        "user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
        "timestamp": pa.array([t * 1_000_000 for t in times], pa.timestamp("us", tz="UTC")),
        "event": ["click"] * n, "value": [1.0] * n,
        "row": pa.array(np.arange(n)),
    })
    return Interactions.from_table(table)


fractions = st.tuples(st.floats(0.05, 0.6), st.floats(0.0, 0.3)).filter(
    lambda f: f[0] + f[1] < 0.95)


def parts(split: Split) -> list[Interactions]:
    return [split.train, split.validation, split.test]


def rows(part: Interactions) -> set[int]:
    return set(part.column("row").tolist())


def pairs(part: Interactions) -> set[tuple[int, int]]:
    return set(zip(part.user_index.tolist(), part.item_index.tolist(), strict=True))


def assert_partition(data: Interactions, split: Split) -> None:
    sets = [rows(p) for p in parts(split)]
    assert sum(len(p) for p in parts(split)) == len(data)
    assert set().union(*sets) == set(range(len(data)))
    for p in parts(split):
        assert p.users == data.users and p.items == data.items


def assert_no_shared_pair(split: Split) -> None:
    a, b, c = (pairs(p) for p in parts(split))
    assert not (a & b) and not (a & c) and not (b & c)


@SETTINGS
@given(logs(), st.integers(1, 3), st.integers(0, 2))
def test_leave_last_n(data: Interactions, n: int, validation_n: int) -> None:
    split = leave_last_n(data, n, validation_n)
    assert_partition(data, split)
    assert_no_shared_pair(split)
    # every active user keeps at least one pair in training
    assert set(np.unique(split.train.user_index)) == set(np.unique(data.user_index))
    # a test pair's last interaction is not older than any of the user's training pairs
    for u in np.unique(split.test.user_index):
        last_test = split.test.timestamps[split.test.user_index == u].max()
        train_last = {}
        for i, t in zip(split.train.item_index[split.train.user_index == u],
                        split.train.timestamps[split.train.user_index == u], strict=True):
            train_last[i] = max(t, train_last.get(i, t))
        assert last_test >= max(train_last.values())


@SETTINGS
@given(logs(), fractions, st.integers(0, 2**31))
def test_random_holdout(data: Interactions, f: tuple[float, float], seed: int) -> None:
    split = random_holdout(data, f[0], f[1], seed=seed)
    assert_partition(data, split)
    assert_no_shared_pair(split)
    assert set(np.unique(split.train.user_index)) == set(np.unique(data.user_index))


@SETTINGS
@given(logs(), fractions, st.integers(0, 2**31))
def test_user_split(data: Interactions, f: tuple[float, float], seed: int) -> None:
    split = user_split(data, f[0], f[1], seed=seed)
    assert_partition(data, split)
    assert_no_shared_pair(split)
    a, b, c = (set(np.unique(p.user_index).tolist()) for p in parts(split))
    assert not (a & b) and not (a & c) and not (b & c)


@SETTINGS
@given(logs(), fractions)
def test_temporal_fraction(data: Interactions, f: tuple[float, float]) -> None:
    split = temporal_split_fraction(data, f[0], f[1])
    assert_partition(data, split)
    train, val, test = (p.timestamps for p in parts(split))
    if test.size:
        assert (train < test.min()).all() and (val < test.min()).all()
    if val.size:
        assert (train < val.min()).all()
    assert test.size >= 1  # the last row always falls at or after the cut


@SETTINGS
@given(logs(), st.integers(0, 21), st.integers(0, 21), st.booleans())
def test_temporal_cut(data: Interactions, a: int, b: int, drop: bool) -> None:
    val_cut, test_cut = sorted((a, b))
    split = temporal_split(data, f"1970-01-01T00:00:{test_cut:02d}Z",
                           f"1970-01-01T00:00:{val_cut:02d}Z", drop_repeats=drop)
    train, val, test = (p.timestamps // 1_000_000 for p in parts(split))
    assert (test >= test_cut).all()
    assert (val >= val_cut).all() and (val < test_cut).all()
    assert (train < val_cut).all()
    if drop:
        assert_no_shared_pair(split)
        kept = set().union(*(rows(p) for p in parts(split)))
        dropped = set(range(len(data))) - kept
        for r in dropped:  # only later repeats of a pair seen in an earlier part are dropped
            assert (data.user_index[r], data.item_index[r]) in pairs(split.train) | pairs(
                split.validation)
    else:
        assert_partition(data, split)


@SETTINGS
@given(logs(), fractions)
def test_temporal_fraction_drop_repeats(data: Interactions, f: tuple[float, float]) -> None:
    split = temporal_split_fraction(data, f[0], f[1], drop_repeats=True)
    assert_no_shared_pair(split)
    full = temporal_split_fraction(data, f[0], f[1])
    assert rows(split.train) == rows(full.train)
    assert rows(split.test) <= rows(full.test)


def test_seeded_splits_are_deterministic() -> None:
    data = Interactions.from_table(make_log(n_users=80, n_items=60, n_rows=3000))
    for fn in (random_holdout, user_split):
        a, b = fn(data, 0.2, 0.1, seed=7), fn(data, 0.2, 0.1, seed=7)
        other = fn(data, 0.2, 0.1, seed=8)
        for x, y in zip(parts(a), parts(b), strict=True):
            assert x.table.equals(y.table)
        assert not a.test.table.equals(other.test.table)


def test_fractions_are_checked() -> None:
    data = Interactions.from_table(make_log())
    for bad in ((0.0, 0.0), (1.0, 0.0), (0.6, 0.5), (0.2, -0.1)):
        with pytest.raises(ValueError, match="fractions"):
            user_split(data, *bad)


def test_movielens_splits_have_no_leak() -> None:
    from recscope.data.loaders import load_movielens

    data = load_movielens(data_path("ml-100k"))
    for split in (leave_last_n(data, 1), random_holdout(data, 0.2, seed=1),
                  user_split(data, 0.2, seed=1), temporal_split_fraction(data, 0.2)):
        assert sum(len(p) for p in parts(split)) == 100_000
        assert_no_shared_pair(split)
    loo = leave_last_n(data, 1)
    assert len(loo.test) == 943  # one rating per user, ML-100K has one rating per pair
