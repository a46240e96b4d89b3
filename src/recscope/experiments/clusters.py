"""Graph clusters for cluster-randomised experiments: Leiden or METIS, balanced sizes.

A cluster-randomised experiment assigns whole groups of connected units (friends,
followers, a creator and her audience) to one arm, so that the spillover between units
stays inside an arm. The price is variance: fewer, larger randomisation units. Two
standard partitioners, both chosen rather than written:

- **Leiden** (``leidenalg`` on ``python-igraph``; Traag, Waltman & van Eck 2019):
  modularity communities (``resolution`` scales the modularity null model), capped at
  1.25 x the target size (oversized communities are split again by Leiden on their
  subgraph), then each community below half the target joins the neighbouring one it
  shares the most edges with (within the cap), and the rest are packed together (first
  fit by decreasing size). Merging never cuts an edge, so it never raises the cut.
- **METIS** (``pymetis``; Karypis & Kumar 1998): ``n_clusters`` parts of equal size
  (METIS' default 3% imbalance) minimising the weighted edge cut.

:func:`cluster_bipartite` clusters units by a user–creator engagement graph instead of a
graph between units. :func:`read_edges` reads an edge list (CSV, TSV, Parquet) and maps
its ids onto the experiment's units; every problem names the file, the column and the row.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

from recscope.errors import ConfigError, DataValidationError

DEFAULT_CLUSTER_SIZE = 100
"""Target units per cluster when neither ``n_clusters`` nor ``resolution`` is given."""


@dataclass(frozen=True)
class Clustering:
    """One cluster id per unit index (``cluster[i]`` for unit ``i``; ids 0..k-1).

    ``cut_fraction``: share of the (undirected, weighted) edge weight whose two ends lie
    in different clusters; ``sizes``: units per cluster id.
    """

    cluster: np.ndarray
    method: str
    cut_fraction: float
    sizes: np.ndarray

    @property
    def n_clusters(self) -> int:
        return len(self.sizes)

    def summary(self) -> dict[str, float | int | str]:
        """Numbers for reports: clusters, size quantiles, cut fraction."""
        s = self.sizes
        return {"method": self.method, "n_clusters": self.n_clusters,
                "cut_fraction": self.cut_fraction, "size_min": int(s.min()),
                "size_median": float(np.median(s)), "size_max": int(s.max())}

    def table(self, unit_ids: Sequence[object] | np.ndarray | pa.Array | None = None,
              *, unit: str = "unit_id", cluster: str = "cluster_id") -> pa.Table:
        """``unit, cluster`` rows (unit ids default to the indices)."""
        ids = pa.array(np.arange(len(self.cluster))) if unit_ids is None else (
            unit_ids if isinstance(unit_ids, pa.Array) else pa.array(unit_ids))
        if len(ids) != len(self.cluster):
            raise ValueError(f"{len(ids)} unit ids for {len(self.cluster)} units")
        return pa.table({unit: ids, cluster: pa.array(self.cluster)})


@dataclass(frozen=True)
class EdgeList:
    """Edges between unit indices ``0..len(units)-1`` (``units`` holds their ids); in an
    engagement graph (``items`` given) ``dst`` holds indices of ``items`` instead."""

    units: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    weights: np.ndarray | None
    file: str | None = None
    items: np.ndarray | None = None


def _undirected(n: int, src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None
                ) -> sparse.csr_matrix:
    """Symmetric adjacency (duplicate edges add up, self-loops dropped)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = src != dst
    a = sparse.coo_matrix((w[keep], (src[keep], dst[keep])), shape=(n, n)).tocsr()
    a = (a + a.T).tocsr()
    a.sum_duplicates()
    return a


def cut_fraction(cluster: np.ndarray, src: np.ndarray, dst: np.ndarray,
                 weights: np.ndarray | None = None) -> float:
    """Share of the edge weight (self-loops left out) crossing clusters; NaN without
    edges."""
    keep = src != dst
    w = np.ones(int(keep.sum())) if weights is None else np.asarray(weights, float)[keep]
    total = float(w.sum())
    if total <= 0:
        return math.nan
    crossing = cluster[src[keep]] != cluster[dst[keep]]
    return float(w[crossing].sum() / total)


def _check_graph(n_units: int, src: np.ndarray, dst: np.ndarray,
                 weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    src = np.asarray(src)
    dst = np.asarray(dst)
    if n_units < 2:
        raise ConfigError(f"clustering needs at least 2 units, got {n_units}", key="n_units")
    if src.shape != dst.shape or src.ndim != 1:
        raise ConfigError("src and dst must be 1-d arrays of the same length", key="src")
    for name, a in (("src", src), ("dst", dst)):
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0
                       or a.max() >= n_units):
            raise ConfigError(f"{name} must hold unit indices in [0, {n_units})", key=name)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != src.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ConfigError("weights must be one finite non-negative number per edge",
                              key="weights")
    return src.astype(np.int64), dst.astype(np.int64)


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids 0..k-1 (in order of first appearance of the sorted labels) and sizes."""
    _, inv, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    return inv.astype(np.int64), sizes.astype(np.int64)


def _unit_sizes(labels: np.ndarray, size: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids and the units per cluster: each node counts ``size[node]`` units (1 when
    ``size`` is None; items of an engagement graph count 0)."""
    cl, counts = _relabel(labels)
    if size is None:
        return cl, counts
    return cl, np.bincount(cl, weights=size, minlength=len(counts)).astype(np.int64)


def pack_small(labels: np.ndarray, target: float, size: np.ndarray | None = None
               ) -> np.ndarray:
    """Merge clusters below ``target / 2`` units into bins of about ``target`` units
    (first fit by decreasing size). Merging never cuts an edge. ``size``: units per node
    (default 1)."""
    cl, sizes = _unit_sizes(labels, size)
    small = np.flatnonzero(sizes < target / 2)
    if len(small) < 2:
        return cl
    order = small[np.argsort(-sizes[small], kind="stable")]
    new_id = np.arange(len(sizes))
    bin_of_size: list[tuple[int, int]] = []  # (bin id, units) of the open bins
    for c in order:
        s = int(sizes[c])
        placed = False
        for j, (b, used) in enumerate(bin_of_size):
            if used + s <= target:
                new_id[c] = b
                bin_of_size[j] = (b, used + s)
                placed = True
                if used + s >= target / 2:  # full enough: close it
                    bin_of_size.pop(j)
                break
        if not placed:
            bin_of_size.append((int(c), s))
            new_id[c] = c
        if len(bin_of_size) > 64:  # keep first fit cheap on millions of singletons
            bin_of_size.pop(0)
    return _relabel(new_id[cl])[0]


def _n_clusters(n_units: int, n_clusters: int | None, resolution: float | None,
                method: str) -> int:
    """The number of clusters asked for (default units / 100), options checked."""
    if n_clusters is not None and not 2 <= n_clusters <= n_units:
        raise ConfigError(f"n_clusters must be in [2, {n_units}], got {n_clusters}",
                          key="n_clusters")
    if resolution is not None and not (resolution > 0 and math.isfinite(resolution)):
        raise ConfigError(f"resolution must be positive, got {resolution}", key="resolution")
    if method not in ("leiden", "metis"):
        raise ConfigError(f"unknown clustering method {method!r} (expected leiden or metis)",
                          key="method")
    return n_clusters if n_clusters is not None else max(2, n_units // DEFAULT_CLUSTER_SIZE)


def cluster_graph(n_units: int, src: np.ndarray, dst: np.ndarray, *,
                  weights: np.ndarray | None = None,
                  method: Literal["leiden", "metis"] = "leiden",
                  n_clusters: int | None = None, resolution: float | None = None,
                  seed: int = 0) -> Clustering:
    """Partition ``n_units`` units joined by edges ``src[i] - dst[i]`` into balanced
    clusters (direction is ignored; duplicate edges add their weights).

    ``n_clusters``: the number of clusters (METIS: exactly; Leiden: the target size
    ``n_units / n_clusters``). Default: units / 100. ``resolution`` (Leiden): the
    modularity resolution (default 1). ``seed`` makes the partition reproducible.
    """
    src, dst = _check_graph(n_units, src, dst, weights)
    k = _n_clusters(n_units, n_clusters, resolution, method)
    target = n_units / k
    if method == "metis":
        labels = _metis(n_units, src, dst, weights, k, seed)
    else:
        labels = _leiden(n_units, src, dst, weights, target, resolution, seed)
    cl, sizes = _relabel(labels)
    return Clustering(cl, method, cut_fraction(cl, src, dst, weights), sizes)


def cluster_bipartite(n_units: int, n_items: int, unit: np.ndarray, item: np.ndarray, *,
                      weights: np.ndarray | None = None,
                      method: Literal["leiden", "metis"] = "leiden",
                      n_clusters: int | None = None, resolution: float | None = None,
                      seed: int = 0) -> Clustering:
    """Cluster units by what they engage with: a user–creator engagement graph (edges
    ``unit[i] - item[i]``, e.g. a user's clicks on a creator's pins, ``weights`` their
    counts) partitioned as one graph of units and items, then the units' clusters kept.

    Users who engage with the same creators land together, so that a change acting
    through a creator (her supply, her audience's feeds) stays inside an arm as far as the
    audiences allow. Items carry no size: METIS balances the units alone (zero vertex
    weights for items), and Leiden's cap, merging and packing count units only.
    ``cut_fraction`` is the share of the engagement weight going to an item whose home
    cluster (the one with most of its engagement) is not the unit's.
    """
    if n_items < 1:
        raise ConfigError(f"an engagement graph needs at least 1 item, got {n_items}",
                          key="n_items")
    unit, item = _check_graph(n_units, unit, item, weights)
    if item.size and item.max() >= n_items:
        raise ConfigError(f"item must hold item indices in [0, {n_items})", key="item")
    k = _n_clusters(n_units, n_clusters, resolution, method)
    w = np.ones(unit.size) if weights is None else np.asarray(weights, dtype=np.float64)
    # units without engagement have nothing to keep together: the engaged ones are
    # partitioned into their share of the k clusters, the others fill the rest at random
    keep = w > 0
    engaged = np.zeros(n_units, dtype=bool)
    engaged[unit[keep]] = True
    idx = np.flatnonzero(engaged)
    k_e = min(len(idx), max(1, round(k * len(idx) / n_units))) if len(idx) else 0
    labels = np.empty(n_units, dtype=np.int64)
    if k_e >= 2:
        pos = np.full(n_units, -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        m = len(idx) + n_items
        src, dst, ew = pos[unit[keep]], item[keep] + len(idx), w[keep]
        size = np.r_[np.ones(len(idx), np.int64), np.zeros(n_items, np.int64)]
        if method == "metis":
            part = _metis(m, src, dst, ew, k_e, seed, vweights=size)[:len(idx)]
        else:
            part = _leiden(m, src, dst, ew, len(idx) / k_e, resolution, seed,
                           size=size)[:len(idx)]
        labels[idx] = _relabel(part)[0]
    elif k_e == 1:
        labels[idx] = 0
    rest = np.flatnonzero(~engaged)
    if len(rest):
        k_r = max(1, k - k_e)
        shuffled = rest[np.random.default_rng(seed).permutation(len(rest))]
        first = int(labels[idx].max()) + 1 if len(idx) else 0
        labels[shuffled] = first + np.arange(len(rest)) * k_r // len(rest)
    cl, sizes = _relabel(labels)
    per = sparse.csr_matrix((w, (item, cl[unit])), shape=(n_items, len(sizes)))
    home = np.asarray(per.argmax(axis=1)).ravel()
    total = float(w.sum())
    cut = float(w[cl[unit] != home[item]].sum() / total) if total > 0 else math.nan
    return Clustering(cl, method, cut, sizes)


def _metis(n: int, src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None,
           k: int, seed: int, vweights: np.ndarray | None = None) -> np.ndarray:
    import pymetis

    a = _undirected(n, src, dst, weights)
    ew = None
    if weights is not None:
        # METIS takes positive integer weights: counts as they are, other weights scaled
        # to at most 1,000 (large weights were measured to break METIS' balance: a
        # bipartite graph scaled x100 came back in 51 parts of 563 instead of 200 of 100)
        w = a.data
        if not np.array_equal(w, np.rint(w)):
            pos = w[w > 0]
            w = w * (min(100.0 / pos.min(), 1000.0 / pos.max()) if pos.size else 1.0)
        ew = np.maximum(np.rint(w), 1).astype(np.int64)
    adj = pymetis.CSRAdjacency(a.indptr.astype(np.int64), a.indices.astype(np.int64))
    _, parts = pymetis.part_graph(k, adj, eweights=ew, vweights=vweights,
                                  options=pymetis.Options(seed=int(seed)))
    return np.asarray(parts, dtype=np.int64)


def _leiden(n: int, src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None,
            target: float, resolution: float | None, seed: int,
            size: np.ndarray | None = None) -> np.ndarray:
    """Leiden modularity communities, oversized ones split again, small ones packed.

    (leidenalg's own ``max_comm_size`` was found not to bound community sizes with
    leidenalg 0.12 / igraph 1.0, so oversized communities are split here: Leiden again on
    the community's subgraph at twice the resolution per level, and, for a community Leiden
    cannot split, consecutive chunks of its breadth-first order.)
    """
    import igraph as ig
    import leidenalg

    keep = src != dst
    g = ig.Graph(n=n, edges=np.column_stack([src[keep], dst[keep]]), directed=False)
    if weights is not None:
        g.es["weight"] = np.asarray(weights, dtype=np.float64)[keep]
    w = "weight" if weights is not None else None
    gamma = 1.0 if resolution is None else float(resolution)
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=w,
                                    resolution_parameter=gamma, seed=int(seed))
    labels = np.asarray(part.membership, dtype=np.int64)
    cap = max(2, math.ceil(1.25 * target))
    unit = np.ones(n, dtype=np.int64) if size is None else np.asarray(size, dtype=np.int64)
    next_label = int(labels.max()) + 1
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    work = [(grp, 1) for grp in np.split(order, bounds) if unit[grp].sum() > cap]
    while work:
        nodes, depth = work.pop()
        sub = g.induced_subgraph(nodes.tolist())
        sub_labels = None
        if depth <= 12 and sub.ecount():
            p = leidenalg.find_partition(sub, leidenalg.RBConfigurationVertexPartition,
                                         weights=w, resolution_parameter=gamma * 2.0**depth,
                                         seed=int(seed))
            if len(p.sizes()) > 1:
                sub_labels = np.asarray(p.membership, dtype=np.int64)
        if sub_labels is None:  # chunks of the breadth-first order, by units
            bfs = _bfs_order(sub)
            u = unit[nodes][bfs]
            total = int(u.sum())
            k = math.ceil(total / target)
            sub_labels = np.empty(len(nodes), dtype=np.int64)
            sub_labels[bfs] = (np.cumsum(u) - u) * k // total
        o = np.argsort(sub_labels, kind="stable")
        for grp in np.split(o, np.flatnonzero(np.diff(sub_labels[o])) + 1):
            members = nodes[grp]
            labels[members] = next_label
            next_label += 1
            if unit[members].sum() > cap:
                work.append((members, depth + 1))
    labels = merge_small(labels, _undirected(n, src, dst, weights), target, cap, size)
    return pack_small(labels, target, size)


def merge_small(labels: np.ndarray, adjacency: sparse.csr_matrix, target: float, cap: int,
                size: np.ndarray | None = None) -> np.ndarray:
    """Merge each cluster below ``target / 2`` units (smallest first) into the
    neighbouring cluster it shares the most edge weight with, when the two together stay
    within ``cap`` units: the merge removes the edges between them from the cut.
    ``size``: units per node (default 1)."""
    cl, sizes = _unit_sizes(labels, size)
    k = len(sizes)
    small = np.flatnonzero(sizes < target / 2)
    if len(small) == 0:
        return cl
    m = sparse.csr_matrix((np.ones(len(cl)), (np.arange(len(cl)), cl)), shape=(len(cl), k))
    between = (m.T @ adjacency @ m).tocsr()
    parent = np.arange(k)
    size = sizes.astype(np.int64).copy()

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    for c in small[np.argsort(sizes[small], kind="stable")]:
        r = find(int(c))
        if size[r] >= target / 2:
            continue
        lo, hi = between.indptr[c], between.indptr[c + 1]
        weight: dict[int, float] = {}
        for j, w in zip(between.indices[lo:hi], between.data[lo:hi], strict=True):
            rj = find(int(j))
            if rj != r and size[rj] + size[r] <= cap:
                weight[rj] = weight.get(rj, 0.0) + float(w)
        if weight:
            best = max(weight, key=weight.__getitem__)
            parent[r] = best
            size[best] += size[r]
    roots = np.array([find(i) for i in range(k)])
    return _relabel(roots[cl])[0]


def _bfs_order(g: object) -> np.ndarray:
    """Vertices of an igraph graph in breadth-first order, component by component."""
    n = g.vcount()  # type: ignore[attr-defined]
    seen = np.zeros(n, dtype=bool)
    out: list[int] = []
    for v in range(n):
        if not seen[v]:
            vs = g.bfs(v)[0]  # type: ignore[attr-defined]
            seen[vs] = True
            out.extend(vs)
    return np.asarray(out, dtype=np.int64)


def _py(x: object) -> object:
    """A numpy scalar as the Python value (for messages)."""
    return x.item() if isinstance(x, np.generic) else x


# -- edge files -------------------------------------------------------------------------------

def read_table(path: str | os.PathLike[str]) -> pa.Table:
    """A CSV, TSV/``.dat`` or Parquet file as an Arrow table (missing or empty files,
    unreadable content: one line naming the file)."""
    path = Path(path)
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if not path.exists():
        raise DataValidationError("file not found", file=str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise DataValidationError("the file is empty", file=str(path))
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")) or path.is_dir():
            return pq.read_table(path)
        delim = "\t" if name.endswith((".tsv", ".dat", ".tsv.gz", ".dat.gz")) else ","
        return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delim))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"cannot read the table: {str(exc).splitlines()[0]}",
                                  file=str(path)) from exc


def read_edges(path: str | os.PathLike[str], *, src: str | None = None,
               dst: str | None = None, weight: str | None = None,
               units: Sequence[object] | np.ndarray | pa.Array | None = None,
               engagement: bool = False) -> EdgeList:
    """Read an edge list (CSV, TSV/``.dat``, Parquet) and map its ids to unit indices.

    ``src`` / ``dst`` default to the first two columns; ``weight`` names an optional
    non-negative weight column. With ``units`` (the experiment's units), an id that is
    not one of them is an error naming the file, the column and the row (1-based, data
    rows); without, the units are the ids found, sorted. Null ids, ids of a different
    kind in the two columns and missing, negative or NaN weights are errors too.
    ``engagement``: a user–creator engagement graph (for :func:`cluster_bipartite`):
    ``dst`` holds item (creator) ids of their own kind, indexed into ``items``.
    """
    p = Path(path)
    t = read_table(p)
    file = str(p)
    if t.num_rows == 0:
        raise DataValidationError("the edge list has no rows", file=file)
    names = t.column_names
    if src is None or dst is None:
        if len(names) < 2:
            raise DataValidationError("an edge list needs two id columns (source, target)",
                                      file=file)
        src = src or names[0]
        dst = dst or names[1]
    for c in (src, dst, weight):
        if c is not None and c not in names:
            raise DataValidationError(f"column not found (columns: {', '.join(names)})",
                                      file=file, column=c)
    a, b = t.column(src).combine_chunks(), t.column(dst).combine_chunks()
    for c, arr in ((src, a), (dst, b)):
        if arr.null_count:
            row = int(pc.index(pc.is_null(arr), True).as_py()) + 1
            raise DataValidationError("missing (null) unit id", file=file, column=c, row=row)
        if pa.types.is_floating(arr.type):
            raise DataValidationError(f"unit ids must be integers or text, not {arr.type}",
                                      file=file, column=c)
    if not engagement and pa.types.is_string(a.type) != pa.types.is_string(b.type):
        raise DataValidationError(f"ids are {b.type} here but {a.type} in column {src!r}: "
                                  "both columns must hold the same kind of id",
                                  file=file, column=dst)
    w = None
    if weight is not None:
        wa = t.column(weight).combine_chunks()
        if not (pa.types.is_integer(wa.type) or pa.types.is_floating(wa.type)):
            raise DataValidationError(f"weights must be numbers, not {wa.type}", file=file,
                                      column=weight)
        w = wa.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            row = int(np.argmax(bad)) + 1
            raise DataValidationError(f"weight {float(w[row - 1])!r} is not a finite non-negative "
                                      "number", file=file, column=weight, row=row)
    an = a.to_numpy(zero_copy_only=False)
    bn = b.to_numpy(zero_copy_only=False)
    # unit ids: both ends of an edge, or only its source in an engagement graph
    ends = ((src, an),) if engagement else ((src, an), (dst, bn))
    if units is None:
        ids = np.unique(np.concatenate([arr for _, arr in ends]))
        idx = [np.searchsorted(ids, arr) for _, arr in ends]
    else:
        known = units.to_numpy(zero_copy_only=False) if isinstance(units, pa.Array) \
            else np.asarray(units)
        if len(np.unique(known)) != len(known):
            raise ConfigError("the unit list holds a unit twice", key="units")
        ids = known
        if (known.dtype.kind in "iu") != (an.dtype.kind in "iu"):
            raise DataValidationError(f"ids are {a.type} here but the experiment's units "
                                      f"are {known.dtype}", file=file, column=src)
        order = np.argsort(known, kind="stable")
        sk = known[order]
        idx = []
        for c, arr in ends:
            pos = np.minimum(np.searchsorted(sk, arr), len(sk) - 1)
            ok = sk[pos] == arr
            if not ok.all():
                row = int(np.argmin(ok))
                raise DataValidationError(
                    f"unit {_py(arr[row])!r} is not one of the experiment's {len(known):,} units "
                    f"({int((~ok).sum()):,} edge end(s) unknown)", file=file, column=c,
                    row=row + 1)
            idx.append(order[pos])
    items = np.unique(bn) if engagement else None
    d = np.searchsorted(items, bn) if items is not None else idx[1]
    return EdgeList(np.asarray(ids), np.asarray(idx[0], np.int64), np.asarray(d, np.int64),
                    w, file, items)
