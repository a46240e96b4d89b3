"""The cells of a simulated experiment and every user's cell.

Each layer assigns users with :func:`recscope.experiments.assignment.assign` (one salt per
layer, so layers are orthogonal and two 2-variant layers make a 2×2 factorial); a user's
cell is the combination of its variants (layer 0 is the fastest-changing digit).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from recscope.errors import ConfigError
from recscope.experiments.assignment import HOLDOUT, Experiment, Holdout, assign
from recscope.sim.experiment_config import ExperimentSpec, LayerSpec


@dataclass
class Cells:
    """Cells of the design and every user's cell and per-layer variant."""

    layers: list[LayerSpec]
    cell_names: list[str]
    cell_specs: list[dict[str, Any]]
    user_cell: np.ndarray
    user_variants: list[np.ndarray]
    in_experiment: np.ndarray

    @property
    def components(self) -> list[str]:
        """Layer names when the design is a 2^K factorial with K >= 2."""
        if len(self.layers) >= 2 and all(len(x.variants) == 2 for x in self.layers):
            return [x.name for x in self.layers]
        return []


def assign_cells(spec: ExperimentSpec, n_users: int) -> Cells:
    """Assign every user in every layer and enumerate the cells (layer 0 = lowest digit)."""
    layers = spec.experiment
    units = np.arange(n_users, dtype=np.int64)
    variant_names = [["control", *[v for v in x.variants if v != "control"]] for x in layers]
    user_variants = []
    idx = np.zeros(n_users, dtype=np.int64)
    radix = 1
    in_exp = np.zeros(n_users, dtype=bool)
    for x, names in zip(layers, variant_names, strict=True):
        weights = None
        if x.weights is not None:
            if len(x.weights) != len(x.variants):
                raise ConfigError("one weight per variant", key=f"experiment.{x.name}.weights")
            order = list(x.variants)
            weights = [x.weights[order.index(v)] for v in names]
        e = Experiment(name=x.name, variants=tuple(names), weights=weights,
                       layer=x.layer or x.name, traffic=tuple(x.traffic),
                       salt=x.salt or f"{spec.name}:{x.name}:{spec.seed}",
                       holdout=Holdout(x.holdout, salt=spec.name) if x.holdout else None)
        v = assign(units, e)
        ok = np.array([a is not None and a != HOLDOUT for a in v])
        lut = {n: i for i, n in enumerate(names)}
        vi = np.array([lut[a] if o else 0 for a, o in zip(v, ok, strict=True)], dtype=np.int64)
        user_variants.append(np.where(ok, v, None))
        in_exp |= ok
        idx += vi * radix
        radix *= len(names)
    cell_names, cell_specs = [], []
    # itertools.product over reversed lists yields layer 0 as the fastest digit
    for combo in itertools.product(*[range(len(n)) for n in variant_names[::-1]]):
        combo = combo[::-1]
        specv = dict(spec.policy)
        parts = []
        for x, names, c in zip(layers, variant_names, combo, strict=True):
            specv.update(x.variants[names[c]])
            if c:
                parts.append(x.name if names[c] == "treatment" and len(layers) > 1 else
                             (names[c] if len(layers) == 1 else f"{x.name}={names[c]}"))
        cell_names.append("+".join(parts) if parts else "control")
        cell_specs.append(specv)
    return Cells(list(layers), cell_names, cell_specs, idx, user_variants, in_exp)
