"""Small valid inputs for every command, and an in-process runner of the command line
(shared by the bad-input catalogue and the browser test)."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recscope.cli import run
from tests.conftest import make_log

PIPELINE = 'name = "pop"\n\n[[retrievers]]\ncomponent = "popularity"\nquota = 20\n'
WORLD = "n_users = 200\nn_items = 150\nn_impressions = 3000\nn_creators = 20\n"
SIM = """name = "tiny"
seed = 1
days = 2
warmup_days = 1
long_run_days = 0
truth = false

[world]
scale = 0.01

[policy]
retriever = "embedding"
ranker = "affinity"

[[experiment]]
name = "ranker"
[experiment.variants.control]
[experiment.variants.treatment]
ranker = "affinity_quality"
"""
METRICS = """unit = "unit_id"
variant = "variant"
control = "control"

[metrics.clicks]
kind = "mean"
column = "clicks"

[metrics.ctr]
kind = "ratio"
numerator = "clicks"
denominator = "impressions"
"""
POWER_METRICS = METRICS + '\n[metrics.pre]\nkind = "mean"\ncolumn = "pre"\n'


def write_inputs(d: Path) -> None:
    """Small valid inputs for every command (each case breaks one of them)."""
    rng = np.random.default_rng(0)
    log = make_log(n_users=40, n_items=30, n_rows=500, seed=1, extra=True)
    log = log.set_column(log.schema.get_field_index("value"), "value",
                         pa.array(rng.integers(0, 2, log.num_rows).astype(float)))
    pq.write_table(log, d / "log.parquet")
    log.drop_columns(["timestamp"]).to_pandas().to_csv(d / "log.csv", index=False)
    (d / "pipe.toml").write_text(PIPELINE)
    (d / "world.toml").write_text(WORLD)
    (d / "sim.toml").write_text(SIM)
    # rankings and truth with external ids
    users = np.repeat(np.arange(20), 10)
    items = np.tile(np.arange(10), 20)
    pq.write_table(pa.table({"user_id": users, "item_id": (items + users) % 30,
                             "score": np.tile(np.linspace(1, 0.1, 10), 20)}),
                   d / "rankings.parquet")
    pq.write_table(pa.table({"user_id": np.arange(20), "item_id": np.arange(20) % 30}),
                   d / "truth.parquet")
    # a 2x2 factorial experiment (one row per unit and layer) and its events
    n = 400
    units = np.arange(n)
    z = rng.integers(0, 2, (n, 2))
    imp = rng.poisson(20, n) + 1
    clicks = rng.binomial(imp, 0.1)
    pq.write_table(pa.table({"unit_id": units,
                             "variant": np.where(z[:, 0] == 1, "treatment", "control")}),
                   d / "assignments.parquet")
    pq.write_table(pa.concat_tables([pa.table({
        "unit_id": units, "layer": [layer] * n,
        "variant": np.where(z[:, j] == 1, "treatment", "control")})
        for j, layer in enumerate(["retriever", "ranker"])]), d / "factorial.parquet")
    pq.write_table(pa.table({"unit_id": units, "clicks": clicks.astype(float),
                             "impressions": imp.astype(float)}), d / "events.parquet")
    pq.write_table(pa.table({"unit_id": units, "variant": ["control"] * n,
                             "pre": rng.gamma(2.0, 1.0, n)}), d / "units.parquet")
    (d / "metrics.toml").write_text(METRICS)
    (d / "power.toml").write_text(POWER_METRICS)


def invoke(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``recscope ARGS`` in-process in ``cwd``; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = run(args)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()
