"""Deterministic assignment of units to variants: salts, layers, traffic ranges, holdouts.

One function, :func:`assign`, is the single source of truth for who sees what; the
simulator and the service call it, and analysis reads the table it produces.

How a unit is placed (all hashes are 64-bit FNV-1a of UTF-8 text, finished with the
splitmix64 mixer, mapped to ``[0, 1)``):

1. Holdout: ``u_h = h("holdout:<holdout.salt>:<unit>")``; units with ``u_h <
   holdout.fraction`` are kept out of every experiment that names the same holdout and
   get :data:`HOLDOUT`.
2. Layer: ``u_l = h("layer:<layer>:<unit>")``. Experiments in the same layer own disjoint
   ``traffic`` ranges of ``[0, 1)``, so they are mutually exclusive; a unit outside the
   experiment's range gets ``None``. Different layers use different salts, so their
   placements are independent (orthogonal).
3. Variant: ``u_v = h("experiment:<salt>:<unit>")`` picks the variant by cumulative
   weights. The variant hash is independent of the layer hash, so the split inside the
   traffic range is the same whatever the range is.

Units are hashed by their text form (``str(unit)``), so the integer ``42`` and the string
``"42"`` land in the same variant: callers may pass ids as they find them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
import pyarrow as pa

from recscope.core.splitmix import splitmix, splitmix_int, to_unit
from recscope.errors import ConfigError

HOLDOUT = "holdout"
"""Variant label of units kept in a holdout group."""

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Holdout:
    """A group of units kept out of every experiment that names it."""

    fraction: float
    salt: str = "global"

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"holdout fraction must be in [0, 1), got {self.fraction}",
                              key="holdout.fraction")


@dataclass(frozen=True)
class Experiment:
    """What :func:`assign` needs to know about one experiment.

    ``variants`` and ``weights`` (default equal) define the split; ``layer`` and
    ``traffic`` (a ``[start, end)`` slice of the layer) define who is eligible; ``salt``
    (default the name) changes when the experiment is re-randomised.
    """

    name: str
    variants: Sequence[str] = ("control", "treatment")
    weights: Sequence[float] | None = None
    layer: str = "default"
    traffic: tuple[float, float] = (0.0, 1.0)
    salt: str | None = None
    holdout: Holdout | None = None
    _cum: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.variants) < 1 or len(set(self.variants)) != len(self.variants):
            raise ConfigError("variants must be distinct and non-empty", key="variants")
        if HOLDOUT in self.variants:
            raise ConfigError(f"{HOLDOUT!r} is reserved for holdout units", key="variants")
        w = np.ones(len(self.variants)) if self.weights is None else np.asarray(
            self.weights, dtype=float)
        if w.shape != (len(self.variants),) or np.any(w < 0) or w.sum() <= 0:
            raise ConfigError("weights must be one non-negative number per variant",
                              key="weights")
        lo, hi = self.traffic
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"traffic must satisfy 0 <= start < end <= 1, got {self.traffic}",
                              key="traffic")
        cum = np.cumsum(w / w.sum())
        cum[-1] = 1.0
        object.__setattr__(self, "_cum", tuple(float(c) for c in cum))

    @property
    def experiment_salt(self) -> str:
        return self.salt if self.salt is not None else self.name

    @property
    def allocation(self) -> dict[str, float]:
        """Expected share of eligible (in-range, non-holdout) units per variant."""
        prev = 0.0
        out = {}
        for v, c in zip(self.variants, self._cum, strict=True):
            out[v] = c - prev
            prev = c
        return out


def check_layer(experiments: Iterable[Experiment]) -> None:
    """Raise ConfigError when experiments of one layer have overlapping traffic ranges."""
    by_layer: dict[str, list[Experiment]] = {}
    for e in experiments:
        by_layer.setdefault(e.layer, []).append(e)
    for layer, exps in by_layer.items():
        exps = sorted(exps, key=lambda e: e.traffic[0])
        for a, b in itertools.pairwise(exps):
            if b.traffic[0] < a.traffic[1]:
                raise ConfigError(f"experiments {a.name!r} and {b.name!r} overlap in layer "
                                  f"{layer!r}: {a.traffic} vs {b.traffic}", key="traffic")


def unit_hash(unit: object, salt: str) -> float:
    """The hash of one unit under ``salt``, in ``[0, 1)`` (scalar reference version)."""
    h = int(_FNV_OFFSET)
    for byte in f"{salt}:{unit}".encode():
        h ^= byte
        h = (h * int(_FNV_PRIME)) & _MASK
    return (splitmix_int(h) >> 11) / 2.0**53


@numba.njit(cache=True, nogil=True)
def _hash_kernel(prefix: np.ndarray, offsets: np.ndarray, data: np.ndarray,
                 out: np.ndarray) -> None:
    n = out.shape[0]
    for i in range(n):
        h = np.uint64(0xCBF29CE484222325)
        for b in prefix:
            h = (h ^ np.uint64(b)) * np.uint64(0x100000001B3)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i] = to_unit(splitmix(h))


def hash_units(unit_ids: Sequence[object] | np.ndarray | pa.Array, salt: str) -> np.ndarray:
    """Vectorised :func:`unit_hash`: float64 in ``[0, 1)``, identical bit for bit."""
    if isinstance(unit_ids, pa.Array | pa.ChunkedArray):
        arr = unit_ids
    else:
        try:
            arr = pa.array(unit_ids)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: hash their text
            arr = pa.array([None if u is None else str(u) for u in unit_ids], pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ConfigError("unit ids must not be null", key="unit")
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        if pa.types.is_floating(arr.type):
            raise ConfigError("unit ids must be integers or strings, not floats", key="unit")
        arr = arr.cast(pa.string())
    arr = arr.cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None \
        else np.zeros(0, np.uint8)
    prefix = np.frombuffer(f"{salt}:".encode(), dtype=np.uint8)
    out = np.empty(len(arr), dtype=np.float64)
    _hash_kernel(prefix, offsets, data, out)
    return out


def assign(unit_ids: Sequence[object] | np.ndarray | pa.Array,
           experiment: Experiment) -> np.ndarray:
    """Variant of each unit in ``experiment``: an object array of str, ``None`` for units
    outside the experiment's traffic range and :data:`HOLDOUT` for held-out units.

    Deterministic: the same unit, experiment salt and layer always give the same answer,
    on any machine and in any order or batch size.
    """
    n = len(unit_ids)
    out = np.full(n, None, dtype=object)
    if n == 0:
        return out
    eligible = np.ones(n, dtype=bool)
    if experiment.holdout is not None and experiment.holdout.fraction > 0:
        held = hash_units(unit_ids, f"holdout:{experiment.holdout.salt}") \
            < experiment.holdout.fraction
        out[held] = HOLDOUT
        eligible &= ~held
    lo, hi = experiment.traffic
    if (lo, hi) != (0.0, 1.0):
        u_layer = hash_units(unit_ids, f"layer:{experiment.layer}")
        eligible &= (u_layer >= lo) & (u_layer < hi)
    u_var = hash_units(unit_ids, f"experiment:{experiment.experiment_salt}")
    idx = np.searchsorted(np.asarray(experiment._cum), u_var, side="right")
    idx = np.minimum(idx, len(experiment.variants) - 1)
    labels = np.asarray(experiment.variants, dtype=object)
    out[eligible] = labels[idx[eligible]]
    return out


def assignment_table(unit_ids: Sequence[object] | np.ndarray | pa.Array,
                     experiment: Experiment, *, unit: str = "unit_id",
                     variant: str = "variant", include_holdout: bool = False) -> pa.Table:
    """Arrow table of assigned units (``unit``, ``variant``), ready for analysis."""
    v = assign(unit_ids, experiment)
    keep = np.array([x is not None and (include_holdout or x != HOLDOUT) for x in v], bool)
    ids = pa.array(unit_ids) if not isinstance(unit_ids, pa.Array) else unit_ids
    return pa.table({unit: ids.filter(pa.array(keep)),
                     variant: pa.array(v[keep].tolist(), pa.string())})
