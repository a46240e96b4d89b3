"""Time and peak memory to load MovieLens 100K and to run each split, beside pandas.

recscope's loader validates the canonical schema and builds vocabularies and side tables;
the peer is the usual pandas code (``read_csv`` of ``u.data`` with ``to_datetime``, ``u.item`` and
``u.user``, without validation; group-by splits). Each case runs in a fresh process so that peak memory is its own:
``py_peak`` is tracemalloc's peak (Python and numpy allocations), ``arrow_peak`` the
Arrow memory pool's peak (Arrow buffers are invisible to tracemalloc), both from one
traced run. Times are the best and the median of ``--repeat`` untraced runs after a warm-up.

    .venv/bin/python benchmarks/data_loading.py [--data ../shared/data/ml-100k] [--repeat 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"
SPLITS = ("temporal", "leave-last", "random", "user")


def _recscope_case(name: str, data_dir: Path) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(setup, operation) of one recscope case."""
    from recscope.data import leave_last_n, random_holdout, temporal_split_fraction, user_split
    from recscope.data.loaders import load_movielens

    if name == "load":
        return (lambda: None), (lambda: load_movielens(data_dir))
    data = load_movielens(data_dir)
    ops: dict[str, Callable[[], Any]] = {
        "temporal": lambda: temporal_split_fraction(data, 0.2),
        "leave-last": lambda: leave_last_n(data, 1),
        "random": lambda: random_holdout(data, 0.2, seed=0),
        "user": lambda: user_split(data, 0.2, seed=0),
    }
    return (lambda: None), ops[name]


def _pandas_case(name: str, data_dir: Path) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import numpy as np
    import pandas as pd

    def read() -> pd.DataFrame:
        df = pd.read_csv(data_dir / "u.data", sep="\t", header=None,
                         names=["user_id", "item_id", "value", "timestamp"])
        df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
        return df

    def read_all() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        items = pd.read_csv(data_dir / "u.item", sep="|", header=None, encoding="latin-1")
        users = pd.read_csv(data_dir / "u.user", sep="|", header=None)
        return read(), items, users

    if name == "load":
        return (lambda: None), read_all
    df = read()

    def temporal() -> tuple[pd.DataFrame, pd.DataFrame]:
        cut = df["timestamp"].sort_values().iloc[int(len(df) * 0.8)]
        return df[df["timestamp"] < cut], df[df["timestamp"] >= cut]

    def leave_last() -> tuple[pd.DataFrame, pd.DataFrame]:
        ordered = df.sort_values(["user_id", "timestamp"], kind="stable")
        test = ordered.groupby("user_id").tail(1)
        return ordered.drop(test.index), test

    def random() -> tuple[pd.DataFrame, pd.DataFrame]:
        test = df.groupby("user_id").sample(frac=0.2, random_state=0)
        return df.drop(test.index), test

    def user() -> tuple[pd.DataFrame, pd.DataFrame]:
        users = df["user_id"].unique()
        test_users = np.random.default_rng(0).permutation(users)[: round(len(users) * 0.2)]
        mask = df["user_id"].isin(test_users)
        return df[~mask], df[mask]

    ops = {"temporal": temporal, "leave-last": leave_last, "random": random, "user": user}
    return (lambda: None), ops[name]


def _measure(args: tuple[str, str, str, int]) -> dict[str, float]:
    """Run one case in this (fresh) process: best time, then peaks of one traced run."""
    import pyarrow as pa

    lib, name, data_dir, repeat = args
    make = _recscope_case if lib == "recscope" else _pandas_case
    _, op = make(name, Path(data_dir))
    op()  # warm-up: imports, caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        op()
        times.append(time.perf_counter() - t0)
    # a pool nothing has used yet, so its peak is this run's alone
    pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    tracemalloc.start()
    op()
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": min(times), "median": float(sorted(times)[len(times) // 2]),
            "py_peak_mb": py_peak / 2**20,
            "arrow_peak_mb": pool.max_memory() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for name in ("load", *SPLITS):
        res = {}
        for lib in ("recscope", "pandas"):
            with ctx.Pool(1) as pool:
                res[lib] = pool.map(_measure, [(lib, name, str(opts.data), opts.repeat)])[0]
        rows.append((name, res))
    print(f"machine: {platform.machine()}, {mp.cpu_count()} cores, Python "
          f"{platform.python_version()}; time: best of {opts.repeat} runs\n")
    print("| step | recscope s, best (median) | pandas s, best (median) | ratio of bests | "
          "recscope peak MB (py + Arrow) | pandas peak MB (py + Arrow) |")
    print("|---|---|---|---|---|---|")
    for name, res in rows:
        r, p = res["recscope"], res["pandas"]
        label = "load ML-100K" if name == "load" else f"split: {name}"
        print(f"| {label} | {r['seconds']:.4f} ({r['median']:.4f}) | "
              f"{p['seconds']:.4f} ({p['median']:.4f}) | "
              f"{r['seconds'] / p['seconds']:.2f}x | {r['py_peak_mb']:.1f} + "
              f"{r['arrow_peak_mb']:.1f} | {p['py_peak_mb']:.1f} + {p['arrow_peak_mb']:.1f} |")


if __name__ == "__main__":
    main()
