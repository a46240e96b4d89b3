"""Interference-aware designs: cluster, creator-side, switchback and hierarchical assignment.

Every design assigns through the one hash of :func:`recscope.experiments.assignment.assign`
(the experiment's salt, layer, traffic range and holdout), only the *thing hashed*
changes, so the simulator and a service assign identically:

``unit``          the unit id (ordinary A/B test);
``cluster``       ``cluster:<cluster id>``: every unit of a cluster gets its cluster's arm;
``creator``       the same, with each creator's id as the cluster of her items/audience;
``switchback``    ``switchback:<region>:<slice>``: every (region, time slice) cell is one
                  randomisation unit; the first ``burn_in_hours`` of each slice are dropped
                  by the analysis (carry-over);
``hierarchical``  ``mode:<cluster id>`` under the salt ``"<salt>:mode"`` sends a share
                  ``cluster_share`` of clusters to cluster randomisation, the others'
                  units are randomised one by one (Saveski et al., KDD 2017); comparing
                  the two estimates tests for interference.

Bad designs are refused with one line naming the file, the column and the problem: a
unit in two clusters, fewer than 2 clusters in an arm, a switchback slice longer than the
experiment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import model_validator

from recscope.config import StrictModel
from recscope.errors import ConfigError, DataValidationError
from recscope.experiments.assignment import HOLDOUT, Experiment, assign
from recscope.experiments.metrics import _problem, _validate

DesignKind = Literal["unit", "cluster", "creator", "switchback", "hierarchical"]
CLUSTERED: tuple[str, ...] = ("cluster", "creator", "hierarchical")
"""Designs whose analysis needs a cluster per unit."""
GRAPHS: tuple[str, ...] = ("social", "regions", "engagement")
"""The ``graph`` names the simulator resolves itself (any other ``graph`` is a file)."""


class DesignConfig(StrictModel):
    """The ``[design]`` table of an experiment file.

    ``graph``: an edge-list file (cluster designs) clustered with ``method`` into
    ``n_clusters`` clusters (default: units / 100); ``slice_hours``, ``burn_in_hours``,
    ``regions``: the switchback grid; ``cluster_share``: hierarchical designs' share of
    clusters randomised as clusters (the rest unit by unit).
    """

    kind: DesignKind = "unit"
    graph: str | None = None
    method: Literal["leiden", "metis"] = "leiden"
    n_clusters: int | None = None
    slice_hours: float = 24.0
    burn_in_hours: float = 0.0
    regions: int = 1
    cluster_share: float = 0.5

    @model_validator(mode="after")
    def _check(self) -> DesignConfig:
        def bad(key: str, problem: str) -> Exception:
            return _problem(key, problem)

        if self.n_clusters is not None and self.n_clusters < 4:
            raise bad("n_clusters", f"needs at least 4 clusters (2 per arm), got "
                      f"{self.n_clusters}")
        if not (self.slice_hours > 0 and math.isfinite(self.slice_hours)):
            raise bad("slice_hours", f"must be a positive number of hours, got "
                      f"{self.slice_hours}")
        if not (0 <= self.burn_in_hours < self.slice_hours):
            raise bad("burn_in_hours", f"must be in [0, slice_hours = {self.slice_hours:g}), "
                      f"got {self.burn_in_hours}")
        if self.regions < 1:
            raise bad("regions", f"must be at least 1, got {self.regions}")
        if not 0 < self.cluster_share < 1:
            raise bad("cluster_share", f"must be in (0, 1), got {self.cluster_share}")
        if self.graph is not None and self.kind not in CLUSTERED:
            raise bad("graph", f"a graph is for cluster designs, not kind = {self.kind!r}")
        return self

    def n_slices(self, duration_hours: float, *, file: str | os.PathLike[str] | None = None
                 ) -> int:
        """Switchback slices in an experiment of ``duration_hours`` (a slice longer than the
        experiment is an error naming ``design.slice_hours``)."""
        if self.slice_hours > duration_hours:
            raise ConfigError(f"the switchback slice ({self.slice_hours:g} h) is longer than "
                              f"the experiment ({duration_hours:g} h)", key="design.slice_hours",
                              file=None if file is None else str(file))
        n = math.ceil(duration_hours / self.slice_hours - 1e-9)
        if n * self.regions < 4:
            raise ConfigError(f"{n} slice(s) x {self.regions} region(s) give fewer than 4 "
                              "switchback cells (2 per arm)", key="design.slice_hours",
                              file=None if file is None else str(file))
        return n


def parse_design(data: Any, *, file: str | os.PathLike[str] | None = None,
                 prefix: str = "design") -> DesignConfig:
    """A :class:`DesignConfig` from a ``[design]`` table; a problem is a ConfigError naming
    the file and the key (``design.<key>``)."""
    if isinstance(data, DesignConfig):
        return data
    return _validate(DesignConfig, data, file=None if file is None else str(file),
                     prefix=prefix)


def _variant_index(labels: np.ndarray, experiment: Experiment) -> np.ndarray:
    """Index into ``experiment.variants`` (-1: outside the traffic range or held out)."""
    pos = {v: i for i, v in enumerate(experiment.variants)}
    return np.fromiter((pos.get(v, -1) if v is not None and v != HOLDOUT else -1
                        for v in labels), dtype=np.int64, count=len(labels))


def _text_ids(prefix: str, ids: np.ndarray) -> pa.Array:
    arr = pa.array(ids) if not isinstance(ids, pa.Array) else ids
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(pa.scalar(prefix), arr, "")


def _check_ids(cluster_ids: Sequence[object] | np.ndarray, what: str = "cluster_id"
               ) -> np.ndarray:
    ids = np.asarray(cluster_ids)
    if ids.ndim != 1:
        raise ConfigError(f"{what} must be one id per unit", key=what)
    if ids.dtype.kind == "f":
        raise ConfigError(f"{what} must be integers or text, not floats", key=what)
    if ids.dtype.kind == "O" and any(x is None for x in ids):
        raise DataValidationError("missing (null) cluster id", column=what,
                                  row=int(next(i for i, x in enumerate(ids) if x is None)) + 1)
    return ids


def assign_clusters(cluster_ids: Sequence[object] | np.ndarray, experiment: Experiment
                    ) -> np.ndarray:
    """Variant index (into ``experiment.variants``; -1 outside traffic or held out) of
    each unit, given its cluster: every unit of a cluster gets the arm the experiment's
    hash gives the text ``cluster:<id>``."""
    ids = _check_ids(cluster_ids)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    per_cluster = _variant_index(assign(_text_ids("cluster:", uniq), experiment), experiment)
    return per_cluster[inv]


def hierarchical_assign(cluster_ids: Sequence[object] | np.ndarray,
                        experiment: Experiment, share: float,
                        unit_ids: Sequence[object] | np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchical (mixed) design: ``(variant index per unit, mode per unit)``.

    A cluster is randomised as a cluster (``mode = "cluster"``) when the hash of
    ``mode:<id>`` under the salt ``"<salt>:mode"`` is below ``share``; the units of the
    other clusters are randomised one by one (``"unit"``) with the ordinary unit hash of
    their ``unit_ids`` (default: their positions 0..n-1).
    """
    if not 0 < share < 1:
        raise ConfigError(f"cluster_share must be in (0, 1), got {share}",
                          key="design.cluster_share")
    ids = _check_ids(cluster_ids)
    n = len(ids)
    units = np.arange(n) if unit_ids is None else np.asarray(unit_ids)
    if len(units) != n:
        raise ConfigError(f"{len(units)} unit ids for {n} cluster ids", key="unit_ids")
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, dtype=object)
    uniq, inv = np.unique(ids, return_inverse=True)
    mode_exp = Experiment(f"{experiment.experiment_salt}:mode", variants=("cluster", "unit"),
                          weights=(share, 1 - share))
    cluster_mode = np.asarray(assign(_text_ids("mode:", uniq), mode_exp), dtype=object)[inv]
    by_cluster = assign_clusters(ids, experiment)
    by_unit = _variant_index(assign(units, experiment), experiment)
    variant = np.where(cluster_mode == "cluster", by_cluster, by_unit)
    return variant.astype(np.int64), cluster_mode


def switchback_schedule(n_slices: int, n_regions: int, experiment: Experiment) -> np.ndarray:
    """Variant index per ``[region, slice]`` cell: the experiment's hash of
    ``switchback:<region>:<slice>``."""
    if n_slices < 1 or n_regions < 1:
        raise ConfigError(f"a switchback needs at least one slice and one region, got "
                          f"{n_slices} x {n_regions}", key="design.slice_hours")
    r, s = np.meshgrid(np.arange(n_regions), np.arange(n_slices), indexing="ij")
    cells = [f"switchback:{a}:{b}" for a, b in zip(r.ravel(), s.ravel(), strict=True)]
    return _variant_index(assign(cells, experiment), experiment).reshape(n_regions, n_slices)


def _py(x: object) -> object:
    """A numpy scalar as the Python value (for messages)."""
    return x.item() if isinstance(x, np.generic) else x


# -- checks -----------------------------------------------------------------------------------

def check_unique_clusters(unit_ids: Sequence[object] | np.ndarray,
                          cluster_ids: Sequence[object] | np.ndarray, *,
                          file: str | None = None, unit: str = "unit_id",
                          cluster: str = "cluster_id") -> None:
    """Refuse a unit listed in two clusters (one line: file, column, unit, row)."""
    u = np.asarray(unit_ids)
    c = np.asarray(cluster_ids)
    if len(u) != len(c):
        raise ConfigError(f"{len(u)} unit ids for {len(c)} cluster ids", key=cluster)
    order = np.lexsort((c.astype(str) if c.dtype.kind == "O" else c, u))
    us, cs = u[order], c[order]
    clash = np.flatnonzero((us[1:] == us[:-1]) & (cs[1:] != cs[:-1]))
    if len(clash):
        i = clash[0]
        raise DataValidationError(
            f"unit {_py(us[i])!r} is in two clusters ({_py(cs[i])!r} and "
            f"{_py(cs[i + 1])!r}); a unit must "
            "belong to exactly one cluster", file=file, column=cluster,
            row=int(order[i + 1]) + 1)


def check_arms(variant: np.ndarray, cluster_ids: Sequence[object] | np.ndarray,
               n_variants: int = 2, *, file: str | None = None,
               column: str = "cluster_id", what: str = "clusters") -> None:
    """Refuse an assignment with fewer than 2 clusters (or switchback cells) in an arm:
    no variance between clusters can be estimated from one."""
    v = np.asarray(variant)
    c = np.asarray(cluster_ids)
    for k in range(n_variants):
        got = len(np.unique(c[v == k]))
        if got < 2:
            raise DataValidationError(
                f"only {got} of the {what} landed in arm {k}: a cluster-randomised "
                f"analysis needs at least 2 {what} per arm (use more, smaller {what})",
                file=file, column=column)
