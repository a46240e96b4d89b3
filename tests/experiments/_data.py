"""Test data shared by the experiments tests: a small synthetic experiment with raw,
timestamped events, and the Hillstrom experiment as Parquet with a unit id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import data_path

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def make_experiment(n_units: int = 600, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assignments (unit, variant, exposure, covariate, segment) and raw events.

    Timestamps are whole seconds so every engine computes the same windows.
    """
    rng = np.random.default_rng(seed)
    units = np.arange(1, n_units + 1)
    variant = rng.choice(["control", "t1", "t2"], n_units)
    exposure = T0 + pd.to_timedelta(rng.integers(0, 5 * 86400, n_units), unit="s")
    activity = rng.gamma(2.0, 1.0, n_units)
    assign = pd.DataFrame({
        "user_id": units, "variant": variant, "first_exposure_ts": exposure,
        "pre_value": activity * 3 + rng.normal(0, 1, n_units),
        "country": rng.choice(["de", "fr", "uk"], n_units),
    })
    n_ev = n_units * 12
    who = rng.integers(0, n_units, n_ev)
    offset = rng.integers(-20 * 86400, 20 * 86400, n_ev)
    lift = np.where(variant[who] == "t1", 1.3, 1.0)
    impressions = rng.poisson(3 * activity[who]) + 1
    clicks = rng.binomial(impressions, np.clip(0.1 * lift, 0, 1))
    events = pd.DataFrame({
        "user_id": units[who],
        "ts": exposure[who] + pd.to_timedelta(offset, unit="s"),
        "surface": rng.choice(["home", "search"], n_ev),
        "clicks": clicks, "impressions": impressions,
        "revenue": np.round(rng.exponential(5 * activity[who] * lift) * (clicks > 0), 2),
        "item_id": rng.integers(0, 50, n_ev),
    })
    return assign, events


TOML = """
unit = "user_id"
variant = "variant"
control = "control"
exposure = "first_exposure_ts"
timestamp = "ts"
segments = ["country"]

[metrics.revenue_7d]
kind = "mean"
column = "revenue"
window = [0, 7]
cuped_days = 7

[metrics.ctr_home]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
filter = { surface = "home" }
cuped_days = 14

[metrics.buyers]
kind = "proportion"
column = "revenue"

[metrics.items]
kind = "count_distinct"
column = "item_id"
window = [0, 14]

[metrics.revenue_adj]
kind = "mean"
column = "revenue"
covariates = ["pre_value"]

[metrics.revenue_p50]
kind = "quantile"
column = "revenue"
q = 0.5
"""


def hillstrom_parquet(folder: Path) -> tuple[pd.DataFrame, Path]:
    """The Hillstrom experiment with a ``uid`` row number, and its copy as Parquet."""
    h = pd.read_csv(data_path("hillstrom", "hillstrom.csv"))
    h.insert(0, "uid", np.arange(len(h)))
    path = folder / "h.parquet"
    h.to_parquet(path)
    return h, path
