"""The files a simulated experiment writes, and per-unit totals read back from them.

* ``assignments.parquet``: ``unit_id``, ``variant`` (the cell), ``first_exposure_ts`` and
  one column per layer with that layer's variant;
* ``events.parquet``: ``unit_id``, ``ts`` and metric columns (one row per request,
  including the warm-up, which is the pre-exposure period for CUPED);
* ``metrics.toml``: the metric definitions, ready for ``recscope experiment analyze``;
* ``truth.json``: the :class:`~recscope.sim.true_effects.GroundTruth`;
* ``summary.json``: the :class:`~recscope.sim.runner.SimulatedExperiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recscope.data.schema import TIMESTAMP_TYPE
from recscope.io import atomic_dir, write_json, write_parquet, write_text
from recscope.sim.cells import Cells

FILES: tuple[str, ...] = ("assignments.parquet", "events.parquet", "metrics.toml",
                          "truth.json", "summary.json")
"""Every file :func:`write_outputs` may write."""


def assignment_table(cells: Cells, units: np.ndarray, first: np.ndarray) -> pa.Table:
    """The assignment table of the exposed ``units`` (first exposure ``first`` per user)."""
    cols: dict[str, Any] = {
        "unit_id": pa.array(units.astype(np.int64)),
        "variant": pa.array(np.asarray(cells.cell_names, dtype=object)[
            cells.user_cell[units]].tolist(), pa.string()),
        "first_exposure_ts": pa.array(first[units], TIMESTAMP_TYPE),
    }
    if len(cells.layers) == 1:
        v = cells.user_variants[0][units]
        cols["variant"] = pa.array(v.tolist(), pa.string())
    else:
        for x, v in zip(cells.layers, cells.user_variants, strict=True):
            cols[x.name] = pa.array(v[units].tolist(), pa.string())
    return pa.table(cols)


def write_outputs(out_dir: str | Path, result: Any, *, force: bool = True) -> Path:
    """Write a :class:`~recscope.sim.runner.SimulatedExperiment`'s files into ``out_dir``
    all at once (:func:`recscope.io.atomic_dir`: a non-empty folder needs ``force``, and
    only files recscope wrote are replaced)."""
    with atomic_dir(out_dir, force=force) as tmp:
        write_parquet(tmp / "assignments.parquet", result.assignments)
        write_parquet(tmp / "events.parquet", result.events)
        write_text(tmp / "metrics.toml", result.metrics_toml)
        if result.truth is not None:
            write_json(tmp / "truth.json", {"experiment": result.name,
                                            **result.truth.to_dict()})
        write_json(tmp / "summary.json", result.to_dict())
    return Path(out_dir)


def unit_totals(assignments: pa.Table, events: pa.Table, columns: list[str],
                ) -> dict[str, np.ndarray]:
    """Per-unit sums of event ``columns`` at or after each unit's first exposure, aligned
    with the rows of ``assignments`` (units without events get 0)."""
    ids = assignments.column("unit_id").to_numpy()
    first = assignments.column("first_exposure_ts").cast(pa.int64()).to_numpy()
    order = np.argsort(ids, kind="stable")
    units = events.column("unit_id").to_numpy()
    ts = events.column("ts").cast(pa.int64()).to_numpy()
    pos = np.searchsorted(ids[order], units)
    pos = np.minimum(pos, ids.size - 1)
    found = ids[order][pos] == units
    row = order[pos]
    keep = found & (ts >= first[row])
    return {c: np.bincount(row[keep], events.column(c).to_numpy()[keep].astype(np.float64),
                           minlength=ids.size) for c in columns}
