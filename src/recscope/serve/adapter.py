"""From the service's logs to the tables the analysis and OPE read.

:func:`experiment_tables` turns ``LOG_DIR`` into the canonical experiment tables of
``recscope experiment analyze`` (``docs/experiments.md``):

* ``assignments``: one row per unit served under an arm: ``unit_id``, ``variant`` (the
  arm), ``first_exposure_ts`` (its first logged request). Requests served outside the
  experiment (it was off, the unit is outside its traffic range) have no arm and are left
  out; holdout units are kept only with ``include_holdout``. A unit logged under two arms
  is an error naming it (the assignment changed during the experiment).
* ``events``: one row per request: ``unit_id``, ``ts``, ``surface``, ``requests`` (1),
  ``impressions`` (items returned), ``clicks``, ``saves``, ``hides`` (feedback events of
  that request) and ``value`` (sum of their values).

:func:`logged_interactions` gives one canonical interaction per item shown (``value`` =
1 when the item received the reward event, else 0; ``position``, ``propensity``,
``session_id`` = the request), the input of :meth:`recscope.ope.LoggedFeedback.from_interactions`
(slates are requests). Only exploring arms log a propensity: rows of deterministic
arms are refused for OPE with a message naming the arm.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recscope.errors import DataValidationError
from recscope.experiments.assignment import HOLDOUT
from recscope.serve.logs import read_log
from recscope.sim.traffic import LOOP_METRICS

#: Metrics of the events table, ready for ``recscope experiment analyze --metrics``: the
#: loop's per-unit means (shared with the simulator's traffic driver) and the CTR.
METRICS_TOML = ("# Metrics of a recscope serve log (docs/serving.md); written by "
                "`recscope serve export`.\n" + LOOP_METRICS + """
[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
""")

EVENTS = ("click", "save", "hide")


def _unit_column(values: pa.ChunkedArray | pa.Array, unit_type: str) -> pa.Array:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if unit_type == "string":
        return arr
    try:
        return pc.cast(arr, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if unit_type == "int64":
            raise DataValidationError("unit ids are not all integers; use unit_type='string'",
                                      column="unit_id") from None
        return arr


def experiment_tables(log_dir: str | os.PathLike[str], *, experiment: str | None = None,
                      unit_type: str = "auto", include_holdout: bool = False
                      ) -> tuple[pa.Table, pa.Table]:
    """``(assignments, events)`` of the experiment in ``log_dir`` (see the module doc).

    ``experiment`` names the experiment when the log holds several (a log folder reused
    across experiments); ``unit_type``: ``auto`` (int64 when every unit id is an
    integer, else string), ``int64`` or ``string``.
    """
    exp = read_log(log_dir, "exposures")
    fb = read_log(log_dir, "feedback")
    names = sorted(n for n in pc.unique(exp.column("experiment")).to_pylist() if n)
    if experiment is None and len(names) > 1:
        raise DataValidationError(f"the log holds experiments {names}; name one",
                                  file=str(Path(log_dir) / "exposures"), column="experiment")
    if experiment is not None:
        if experiment not in names:
            raise DataValidationError(f"no experiment {experiment!r} in the log (found "
                                      f"{names})", file=str(Path(log_dir) / "exposures"),
                                      column="experiment")
        exp = exp.filter(pc.equal(exp.column("experiment"), experiment))
    keep = pc.is_valid(exp.column("arm"))
    if not include_holdout:
        keep = pc.and_(keep, pc.not_equal(exp.column("arm"), HOLDOUT))
    exp = exp.filter(keep)
    if exp.num_rows == 0:
        raise DataValidationError("no exposure was served under an experiment arm",
                                  file=str(Path(log_dir) / "exposures"))
    # one row per request
    req = exp.group_by(["request_id", "unit_id", "arm", "surface"]).aggregate(
        [("ts", "min"), ("position", "count")])
    # a unit in two arms means the assignment changed
    arms = req.group_by("unit_id").aggregate([("arm", "count_distinct"), ("arm", "min"),
                                              ("arm", "max")])
    bad = pc.greater(arms.column("arm_count_distinct"), 1)
    if pc.any(bad).as_py():
        row = arms.filter(bad).slice(0, 1).to_pylist()[0]
        raise DataValidationError(
            f"unit {row['unit_id']!r} was served under arms {row['arm_min']!r} and "
            f"{row['arm_max']!r}: the assignment changed during the experiment",
            file=str(Path(log_dir) / "exposures"), column="arm")
    first = req.group_by(["unit_id", "arm"]).aggregate([("ts_min", "min")])
    assignments = pa.table({
        "unit_id": _unit_column(first.column("unit_id"), unit_type),
        "variant": first.column("arm").combine_chunks(),
        "first_exposure_ts": first.column("ts_min_min").combine_chunks()})
    order = pc.sort_indices(assignments, [("unit_id", "ascending")])
    assignments = assignments.take(order)
    # feedback counts per request
    cols: dict[str, pa.Array] = {}
    if fb.num_rows:
        fbc = fb.group_by(["request_id", "event"]).aggregate([("value", "count"),
                                                              ("value", "sum")])
        rid = req.column("request_id").to_pylist()
        pos = {r: i for i, r in enumerate(rid)}
        counts = {e: np.zeros(len(rid), np.int64) for e in EVENTS}
        value = np.zeros(len(rid))
        for r, e, n, s in zip(fbc.column("request_id").to_pylist(),
                              fbc.column("event").to_pylist(),
                              fbc.column("value_count").to_pylist(),
                              fbc.column("value_sum").to_pylist(), strict=True):
            i = pos.get(r)
            if i is None:
                continue  # feedback on a request outside the experiment
            counts[e][i] += n
            value[i] += s
        for e in EVENTS:
            cols[f"{e}s"] = pa.array(counts[e])
        cols["value"] = pa.array(value)
    else:
        for e in EVENTS:
            cols[f"{e}s"] = pa.array(np.zeros(req.num_rows, np.int64))
        cols["value"] = pa.array(np.zeros(req.num_rows))
    events = pa.table({
        "unit_id": _unit_column(req.column("unit_id"), unit_type),
        "ts": req.column("ts_min").combine_chunks(),
        "surface": req.column("surface").combine_chunks(),
        "request_id": req.column("request_id").combine_chunks(),
        "requests": pa.array(np.ones(req.num_rows, np.int64)),
        "impressions": pc.cast(req.column("position_count"), pa.int64()).combine_chunks(),
        **cols})
    events = events.take(pc.sort_indices(events, [("ts", "ascending")]))
    return assignments, events


def logged_interactions(log_dir: str | os.PathLike[str], *, reward: str = "click",
                        arm: str | None = None) -> pa.Table:
    """One canonical interaction per logged exposure with its propensity (for OPE).

    ``value`` is 1 when the shown item got a ``reward`` feedback event in that request,
    else 0; ``session_id`` is the request id (one slate per request). ``arm`` restricts
    the rows to one arm.
    """
    if reward not in EVENTS:
        raise DataValidationError(f"reward must be one of {EVENTS}, not {reward!r}",
                                  column="event")
    exp = read_log(log_dir, "exposures")
    fb = read_log(log_dir, "feedback")
    if arm is not None:
        exp = exp.filter(pc.equal(exp.column("arm"), arm))
    if exp.num_rows == 0:
        raise DataValidationError(f"no exposure{'' if arm is None else f' in arm {arm!r}'}",
                                  file=str(Path(log_dir) / "exposures"))
    missing = pc.is_null(exp.column("propensity"))
    if pc.any(missing).as_py():
        row = int(pc.index(missing, True).as_py())
        which = exp.column("arm")[row].as_py()
        raise DataValidationError(
            f"no propensity: arm {which!r} served deterministic slates; off-policy "
            "evaluation needs an exploring arm (exploration > 0)",
            file=str(Path(log_dir) / "exposures"), column="propensity", row=row)
    rewarded = set()
    if fb.num_rows:
        f = fb.filter(pc.equal(fb.column("event"), reward))
        rewarded = set(zip(f.column("request_id").to_pylist(), f.column("item_id").to_pylist(),
                           strict=True))
    value = np.fromiter(((r, i) in rewarded for r, i in zip(
        exp.column("request_id").to_pylist(), exp.column("item_id").to_pylist(), strict=True)),
        dtype=np.float64, count=exp.num_rows)
    return pa.table({
        "user_id": exp.column("unit_id"), "item_id": exp.column("item_id"),
        "timestamp": exp.column("ts"), "event": pa.array(["exposure"] * exp.num_rows),
        "value": pa.array(value), "surface": exp.column("surface"),
        "position": exp.column("position"), "propensity": exp.column("propensity"),
        "session_id": exp.column("request_id")})
