"""A small simulated-platform experiment folder (the layout `recscope simulate --out`
writes) with planted effects and its truth, for the launch tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
SURFACES = ("home_feed", "related", "search")
BASE_REQUESTS = (3.0, 1.0, 0.6)


def experiment_dir(folder: Path, *, n: int = 4000, saves_lift: float = 1.08,
                   hides_lift: float = 1.0, seed: int = 0) -> Path:
    """Write assignments.parquet, events.parquet, metrics.toml (examples/launch_metrics.toml)
    and truth.json: treatment multiplies requests on the home feed by ``saves_lift`` and
    hides by ``hides_lift``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    units = np.arange(n, dtype=np.int64)
    variant = np.where(rng.random(n) < 0.5, "control", "treatment")
    treated = variant == "treatment"
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "unit_id", "surface", "requests", "impressions", "saves", "clicks", "hides",
        "sessions")}
    for s, base in zip(SURFACES, BASE_REQUESTS, strict=True):
        lift = np.where(treated & (s == "home_feed"), saves_lift, 1.0)
        req = rng.poisson(base * lift)
        imp = rng.poisson(req * 6)
        saves = rng.binomial(imp, 0.05)
        hides = rng.binomial(imp, 0.01 * np.where(treated, hides_lift, 1.0))
        cols["unit_id"].append(units)
        cols["surface"].append(np.full(n, s))
        cols["requests"].append(req)
        cols["impressions"].append(imp)
        cols["saves"].append(saves)
        cols["clicks"].append(saves + rng.poisson(0.5, n))
        cols["hides"].append(hides)
        cols["sessions"].append(np.minimum(req, 1))
    events = pa.table({k: np.concatenate(v) for k, v in cols.items()})
    pq.write_table(pa.table({"unit_id": units, "variant": variant}),
                   folder / "assignments.parquet")
    pq.write_table(events, folder / "events.parquet")
    shutil.copyfile(ROOT / "examples" / "launch_metrics.toml", folder / "metrics.toml")
    # the truth: expected saves and hides per user in each arm
    req = np.array(BASE_REQUESTS)
    saves_c = float(req.sum() * 6 * 0.05)
    saves_t = float((req[0] * saves_lift + req[1:].sum()) * 6 * 0.05)
    hides_c = float(req.sum() * 6 * 0.01)
    hides_t = float((req[0] * saves_lift + req[1:].sum()) * 6 * 0.01 * hides_lift)
    lam_t = req * np.array([saves_lift, 1.0, 1.0])
    sessions_c = float((1 - np.exp(-req)).sum())
    sessions_t = float((1 - np.exp(-lam_t)).sum())
    truth = {"kind": "ground_truth", "cells": ["control", "treatment"],
             "metrics": ["saves", "hides", "sessions"],
             "short_run": {"saves": {"control": saves_c, "treatment": saves_t},
                           "hides": {"control": hides_c, "treatment": hides_t},
                           "sessions": {"control": sessions_c, "treatment": sessions_t}}}
    (folder / "truth.json").write_text(json.dumps(truth))
    return folder
