"""Graph clustering for cluster-randomised designs: Leiden and METIS on planted and real
graphs, balanced sizes, cut fractions, and edge files' errors naming file/column/row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.clusters import (
    cluster_bipartite,
    cluster_graph,
    cut_fraction,
    pack_small,
    read_edges,
)
from tests.conftest import data_path


def planted(n_blocks: int = 40, size: int = 25, p_in: float = 0.3, n_out: int = 300,
            seed: int = 0) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """A graph with ``n_blocks`` dense blocks and ``n_out`` random edges between them."""
    rng = np.random.default_rng(seed)
    src, dst = [], []
    for b in range(n_blocks):
        i, j = np.triu_indices(size, 1)
        keep = rng.random(len(i)) < p_in
        src.append(b * size + i[keep])
        dst.append(b * size + j[keep])
    n = n_blocks * size
    src.append(rng.integers(0, n, n_out))
    dst.append(rng.integers(0, n, n_out))
    block = np.repeat(np.arange(n_blocks), size)
    return n, np.concatenate(src), np.concatenate(dst), block


@pytest.mark.parametrize("method", ["leiden", "metis"])
def test_planted_blocks_are_found_with_a_small_cut(method: str) -> None:
    n, src, dst, block = planted()
    c = cluster_graph(n, src, dst, method=method, n_clusters=40, seed=1)
    truth = cut_fraction(block, src, dst)
    assert c.cluster.shape == (n,) and c.cluster.dtype == np.int64
    assert c.sizes.sum() == n and c.n_clusters == len(np.unique(c.cluster))
    assert c.cut_fraction == pytest.approx(cut_fraction(c.cluster, src, dst))
    # close to the planted partition's cut, far below a random partition's (~97.5%)
    assert c.cut_fraction < truth + 0.05
    rnd = np.random.default_rng(0).integers(0, 40, n)
    assert cut_fraction(rnd, src, dst) > 0.9
    # balanced: no cluster above 1.25x the target (Leiden) / METIS' 3% imbalance
    assert c.sizes.max() <= np.ceil(1.25 * n / 40)
    if method == "metis":
        assert c.n_clusters == 40


def audiences(n_users: int = 2000, n_items: int = 150, groups: int = 10, p_in: float = 0.8,
              per_user: int = 5, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A user-creator engagement graph with planted audiences: each user engages mostly
    (``p_in``) with the creators of her group."""
    rng = np.random.default_rng(seed)
    user_group = rng.integers(0, groups, n_users)
    item_group = np.arange(n_items) % groups
    unit = np.repeat(np.arange(n_users), per_user)
    g = np.where(rng.random(unit.size) < p_in, user_group[unit],
                 rng.integers(0, groups, unit.size))
    members = [np.flatnonzero(item_group == x) for x in range(groups)]
    item = np.array([members[x][rng.integers(0, len(members[x]))] for x in g])
    return unit, item, user_group, item_group


@pytest.mark.parametrize("method", ["leiden", "metis"])
def test_engagement_graph_clusters_users_by_their_creators(method: str) -> None:
    unit, item, user_group, _ = audiences()
    c = cluster_bipartite(2000, 150, unit, item, method=method, n_clusters=10, seed=1)
    assert c.cluster.shape == (2000,) and c.sizes.sum() == 2000
    # the planted audiences are recovered: a cluster is (nearly) one group's users
    purity = sum(np.bincount(user_group[c.cluster == k]).max()
                 for k in range(c.n_clusters)) / 2000
    assert purity > 0.95
    # the cut is about the planted share of engagement outside a group (0.2 x 9/10)
    assert 0.1 < c.cut_fraction < 0.25
    shuffled = cluster_bipartite(2000, 150, unit, np.random.default_rng(2).permutation(item),
                                 method=method, n_clusters=10, seed=1)
    assert shuffled.cut_fraction > 0.5
    # items weigh nothing: the users' clusters are balanced on the users alone
    assert c.sizes.max() <= np.ceil(1.25 * 2000 / 10)
    if method == "metis":
        assert c.n_clusters == 10 and c.sizes.min() >= 0.95 * 200
    # weights count: doubling every edge's weight changes nothing
    w = cluster_bipartite(2000, 150, unit, item, weights=np.full(unit.size, 2.0),
                          method=method, n_clusters=10, seed=1)
    assert w.cut_fraction == pytest.approx(c.cut_fraction, abs=0.02)


@pytest.mark.parametrize("method", ["leiden", "metis"])
def test_users_without_engagement_fill_their_own_clusters(method: str) -> None:
    """Users with no engagement (ids 2000..2499) have nothing to keep together: they fill
    their share of the clusters at random, so sizes stay balanced."""
    unit, item, _, _ = audiences()
    c = cluster_bipartite(2500, 150, unit, item, method=method, n_clusters=25, seed=1)
    idle = np.unique(c.cluster[2000:])
    assert not np.isin(idle, c.cluster[:2000]).any()
    assert len(idle) == 5 and np.bincount(c.cluster)[idle].min() == 100
    assert c.sizes.max() <= np.ceil(1.25 * 100)
    if method == "metis":
        assert c.n_clusters == 25 and c.sizes.min() >= 95


def test_metis_keeps_its_balance_with_count_weights() -> None:
    """Repeated clicks add up to count weights on few, heavy creators: METIS still
    returns the clusters asked for, balanced (with weights scaled x100 it returned 33
    parts of up to 155 users for these 50)."""
    rng = np.random.default_rng(0)
    pop = rng.pareto(1.2, 100) + 1.0
    unit = rng.choice(5000, 100_000, p=(a := rng.lognormal(0, 1, 5000)) / a.sum())
    item = rng.choice(100, 100_000, p=pop / pop.sum())
    c = cluster_bipartite(5000, 100, unit, item, weights=np.ones(unit.size),
                          method="metis", n_clusters=50, seed=0)
    assert c.n_clusters == 50 and c.sizes.max() <= 105


def test_engagement_file_keeps_creators_apart_from_users(tmp_path: Path) -> None:
    """An engagement file's creator ids are their own kind (text beside integer users),
    indexed into ``items``; its users are checked against the experiment's units."""
    unit, item, user_group, _ = audiences(n_users=400, n_items=30, groups=3)
    path = tmp_path / "engagement.parquet"
    pd.DataFrame({"user_id": unit + 1000, "creator": [f"c{i:03d}" for i in item],
                  "clicks": np.ones(unit.size)}).to_parquet(path)
    users = np.arange(1000, 1400)
    e = read_edges(path, src="user_id", dst="creator", weight="clicks", units=users,
                   engagement=True)
    assert e.items is not None and list(e.items[:2]) == ["c000", "c001"]
    np.testing.assert_array_equal(e.src, unit)
    np.testing.assert_array_equal(e.items[e.dst], [f"c{i:03d}" for i in item])
    c = cluster_bipartite(len(e.units), len(e.items), e.src, e.dst, weights=e.weights,
                          method="metis", n_clusters=3, seed=1)
    assert sum(np.bincount(user_group[c.cluster == k]).max() for k in range(3)) > 0.9 * 400
    with pytest.raises(DataValidationError) as err:
        read_edges(path, src="user_id", dst="creator", units=users[1:], engagement=True)
    assert "user_id" in str(err.value) and "not one of the experiment" in str(err.value)


def test_engagement_graph_refuses_bad_input() -> None:
    unit, item, _, _ = audiences(n_users=100, n_items=10, groups=2)
    with pytest.raises(ConfigError, match="item indices"):
        cluster_bipartite(100, 5, unit, item)
    with pytest.raises(ConfigError, match="at least 1 item"):
        cluster_bipartite(100, 0, unit, item)
    with pytest.raises(ConfigError, match="unit indices"):
        cluster_bipartite(50, 10, unit, item)
    with pytest.raises(ConfigError, match="n_clusters"):
        cluster_bipartite(100, 10, unit, item, n_clusters=1)


@pytest.mark.parametrize("method", ["leiden", "metis"])
def test_same_seed_same_partition(method: str) -> None:
    n, src, dst, _ = planted(seed=3)
    a = cluster_graph(n, src, dst, method=method, n_clusters=20, seed=7)
    b = cluster_graph(n, src, dst, method=method, n_clusters=20, seed=7)
    assert np.array_equal(a.cluster, b.cluster)


def test_oversized_communities_are_split_and_small_ones_packed() -> None:
    # one big dense block of 300 and 200 isolated units; target size 50
    rng = np.random.default_rng(0)
    i, j = np.triu_indices(300, 1)
    keep = rng.random(len(i)) < 0.05
    c = cluster_graph(500, i[keep], j[keep], method="leiden", n_clusters=10)
    assert c.sizes.max() <= np.ceil(1.25 * 50)
    # isolated units packed into bins of ~50: at most one leftover bin below half
    assert np.sum(c.sizes < 25) <= 1 and c.n_clusters <= 20
    assert np.sum(c.sizes) == 500


def test_pack_small_never_cuts_an_edge() -> None:
    labels = np.array([0, 0, 1, 2, 3, 3, 3, 3, 4])
    out = pack_small(labels, target=4)
    for a, b in [(0, 1), (4, 5), (5, 6)]:  # units together before stay together
        assert out[a] == out[b]
    assert len(np.unique(out)) < len(np.unique(labels))


def test_weights_change_the_cut() -> None:
    n, src, dst, block = planted(n_blocks=10, size=20)
    w = np.where(block[src] == block[dst], 1.0, 0.0)
    assert cut_fraction(block, src, dst, w) == 0.0
    c = cluster_graph(n, src, dst, weights=w, method="metis", n_clusters=10)
    assert c.cut_fraction <= 0.05


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ConfigError, match="n_clusters"):
        cluster_graph(10, np.array([0]), np.array([1]), n_clusters=1)
    with pytest.raises(ConfigError, match="dst must hold unit indices"):
        cluster_graph(10, np.array([0]), np.array([10]))
    with pytest.raises(ConfigError, match="weights"):
        cluster_graph(10, np.array([0]), np.array([1]), weights=np.array([-1.0]))
    with pytest.raises(ConfigError, match="unknown clustering method"):
        cluster_graph(10, np.array([0]), np.array([1]), method="louvain")  # type: ignore


def test_lastfm_friend_graph() -> None:
    path = data_path("lastfm", "social", "user_friends.dat")
    e = read_edges(path)
    assert len(e.units) == 1892 and len(e.src) == 25434
    assert e.file == str(path)
    for method in ("leiden", "metis"):
        c = cluster_graph(len(e.units), e.src, e.dst, method=method, n_clusters=20)
        # a real friend graph clusters far better than chance (1 - 1/20 = 95% cut)
        assert c.cut_fraction < 0.7, method


def test_read_edges_maps_to_known_units(tmp_path: Path) -> None:
    f = tmp_path / "edges.csv"
    pd.DataFrame({"a": [10, 20, 30], "b": [20, 30, 10], "w": [1.0, 2.0, 0.5]}).to_csv(
        f, index=False)
    e = read_edges(f, weight="w", units=[30, 20, 10, 40])
    assert list(e.units[e.src]) == [10, 20, 30]
    assert list(e.units[e.dst]) == [20, 30, 10]
    assert list(e.weights) == [1.0, 2.0, 0.5]
    pq = tmp_path / "edges.parquet"
    pd.DataFrame({"x": ["u1", "u2"], "y": ["u2", "u3"]}).to_parquet(pq)
    e2 = read_edges(pq)
    assert list(e2.units) == ["u1", "u2", "u3"]


@pytest.mark.parametrize(("frame", "kwargs", "match"), [
    ({"a": [1, 2, 3], "b": [2, 9, 1]}, {"units": [1, 2, 3]},
     r"file .*edges.csv, column 'b', row 2: unit 9 is not one of"),
    ({"a": [1, None, 3], "b": [2, 3, 1]}, {}, r"column 'a', row 2: missing \(null\)"),
    ({"a": [1, 2], "b": [2, 1], "w": [1.0, -2.0]}, {"weight": "w"},
     r"column 'w', row 2: weight -2.0 is not"),
    ({"a": [1, 2], "b": [2, 1]}, {"src": "from"}, r"column 'from': column not found"),
    ({"a": [1, 2], "b": ["x", "y"]}, {}, r"column 'b': ids are string here but int64"),
])
def test_read_edges_errors_name_file_column_row(tmp_path: Path, frame: dict[str, list[object]],
                                                kwargs: dict[str, object], match: str) -> None:
    f = tmp_path / "edges.csv"
    pd.DataFrame(frame).to_csv(f, index=False)
    with pytest.raises(DataValidationError, match=match) as info:
        read_edges(f, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_read_edges_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file not found"):
        read_edges(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataValidationError, match="empty"):
        read_edges(tmp_path / "empty.csv")
