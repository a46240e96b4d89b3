"""Design assignment: the one hash assigns clusters, modes and switchback cells; bad
designs are refused with one line naming the file, the key or column and the problem."""

from __future__ import annotations

import numpy as np
import pytest

from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.assignment import Experiment, Holdout, assign
from recscope.experiments.designs import (
    DesignConfig,
    assign_clusters,
    check_arms,
    check_unique_clusters,
    hierarchical_assign,
    parse_design,
    switchback_schedule,
)

EXP = Experiment("design-test")


def test_every_unit_of_a_cluster_gets_the_cluster_variant() -> None:
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 500, 20_000)
    v = assign_clusters(clusters, EXP)
    assert v.dtype == np.int64 and set(np.unique(v)) == {0, 1}
    for c in np.unique(clusters)[:50]:
        assert len(np.unique(v[clusters == c])) == 1
    # the one hash: the cluster's arm is assign() of the text "cluster:<id>"
    expected = assign([f"cluster:{c}" for c in clusters[:100]], EXP)
    assert [EXP.variants[i] for i in v[:100]] == list(expected)
    # about half the clusters in each arm (500 clusters: sd ~ 2.2%)
    per_cluster = np.array([v[clusters == c][0] for c in np.unique(clusters)])
    assert 0.43 < per_cluster.mean() < 0.57
    # independent of the order units are passed in
    perm = rng.permutation(len(clusters))
    assert np.array_equal(assign_clusters(clusters[perm], EXP), v[perm])


def test_string_cluster_ids_and_a_holdout() -> None:
    e = Experiment("h", holdout=Holdout(0.2, salt="hs"))
    ids = np.array([f"c{i}" for i in range(2000)], dtype=object)
    v = assign_clusters(ids, e)
    assert 0.12 < np.mean(v == -1) < 0.28  # held-out clusters: -1
    assert set(np.unique(v)) == {-1, 0, 1}


def test_hierarchical_modes_and_variants() -> None:
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(400), rng.integers(2, 8, 400))
    units = np.arange(len(clusters)) + 1000
    v, mode = hierarchical_assign(clusters, EXP, 0.3, unit_ids=units)
    share = np.mean([mode[clusters == c][0] == "cluster" for c in range(400)])
    assert 0.22 < share < 0.38
    for c in range(400):
        m = mode[clusters == c]
        assert len(set(m)) == 1  # one mode per cluster
    cm = mode == "cluster"
    assert np.array_equal(v[cm], assign_clusters(clusters, EXP)[cm])
    unit_v = assign(units[~cm], EXP)
    assert [EXP.variants[i] for i in v[~cm]] == list(unit_v)
    # unit-mode units of one cluster are split across arms
    mixed = [c for c in np.unique(clusters[~cm]) if len(np.unique(v[clusters == c])) == 2]
    assert len(mixed) > 50
    with pytest.raises(ConfigError, match="cluster_share"):
        hierarchical_assign(clusters, EXP, 1.0)


def test_switchback_schedule() -> None:
    s = switchback_schedule(30, 4, EXP)
    assert s.shape == (4, 30) and set(np.unique(s)) == {0, 1}
    assert np.array_equal(s, switchback_schedule(30, 4, EXP))
    assert EXP.variants[s[2, 7]] == assign(["switchback:2:7"], EXP)[0]
    other = switchback_schedule(30, 4, Experiment("other-salt"))
    assert not np.array_equal(s, other)


@pytest.mark.parametrize(("data", "key", "match"), [
    ({"kind": "cluser"}, "design.kind", "Input should be"),
    ({"kind": "switchback", "slice_hours": 0.0}, "design.slice_hours", "positive"),
    ({"kind": "switchback", "burn_in_hours": 30.0}, "design.burn_in_hours", r"\[0, slice"),
    ({"kind": "cluster", "n_clusters": 3}, "design.n_clusters", "at least 4"),
    ({"kind": "hierarchical", "cluster_share": 0.0}, "design.cluster_share", r"\(0, 1\)"),
    ({"kind": "unit", "graph": "g.csv"}, "design.graph", "cluster designs"),
    ({"kind": "unit", "regionz": 2}, "design.regionz", "unknown key"),
    ({"kind": "switchback", "regions": "2"}, "design.regions", "valid integer"),
])
def test_design_config_errors_name_file_and_key(data: dict[str, object], key: str,
                                                match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_design(data, file="exp.toml")
    assert info.value.key == key and info.value.file == "exp.toml"


def test_switchback_slice_longer_than_the_experiment() -> None:
    d = DesignConfig(kind="switchback", slice_hours=48.0, regions=2)
    assert d.n_slices(24 * 14) == 7
    with pytest.raises(ConfigError, match=r"slice \(48 h\) is longer than the experiment "
                       r"\(24 h\)") as info:
        d.n_slices(24.0, file="exp.toml")
    assert info.value.key == "design.slice_hours" and info.value.file == "exp.toml"
    with pytest.raises(ConfigError, match="fewer than 4 switchback cells"):
        DesignConfig(kind="switchback", slice_hours=48.0).n_slices(96.0)


def test_unit_in_two_clusters_and_too_few_clusters_per_arm() -> None:
    with pytest.raises(DataValidationError, match=r"file a.csv, column 'cluster_id', row 4: "
                       r"unit 2 is in two clusters \(0 and 1\)"):
        check_unique_clusters([1, 2, 3, 2], [0, 0, 1, 1], file="a.csv")
    check_unique_clusters([1, 2, 2, 3], [0, 0, 0, 1])  # a repeated row is fine
    with pytest.raises(DataValidationError, match=r"only 1 of the clusters landed in arm 0"):
        check_arms(np.array([0, 0, 1, 1, 1]), [5, 5, 6, 7, 7], file="a.csv")
    check_arms(np.array([0, 0, 1, 1]), [1, 2, 3, 4])
