"""``recscope train`` and ``recscope recommend``: fit a pipeline, then serve rankings.

Contracts:

* ``recscope train CONFIG --data PATH [--out DIR]`` reads a pipeline TOML and any data
  ``recscope.data.loaders.load`` understands, fits, and writes ``DIR`` (default
  ``recscope-out/models/<name>``): ``pipeline/`` (the saved components), ``users.parquet``
  and ``items.parquet`` (the id vocabularies) and ``train.json`` (versions, timings). The
  run is logged to tracking.
* ``recscope recommend MODEL_DIR (--users FILE | --all) --k 100 --out rankings.parquet``
  writes ``user_id``, ``item_id``, ``score``, ``rank`` (1-based) with EXTERNAL ids, the
  format ``recscope evaluate`` reads. Users unknown to the model get the cold-start
  fallback (training popularity) instead of an error; their count is printed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from recscope.cli.common import console, file_fingerprint, progress
from recscope.errors import ConfigError, DataValidationError


def train(
    config: Annotated[Path, typer.Argument(help="pipeline TOML (see examples/)")],
    data: Annotated[Path, typer.Option("--data", help="training interactions (any format "
                                       "recscope can load)")],
    out: Annotated[Path | None, typer.Option("--out", help="model directory")] = None,
    data_format: Annotated[str, typer.Option("--format", help="data format (auto detects)")
                           ] = "auto",
) -> None:
    """Fit the pipeline in CONFIG on DATA and save it with its id vocabularies."""
    from recscope.data.loaders import load
    from recscope.io import atomic_dir, write_json
    from recscope.pipeline import Pipeline, load_config
    from recscope.tracking import track

    cfg = load_config(config)
    out_dir = out or Path("recscope-out") / "models" / cfg.name
    with progress() as bar:
        task = bar.add_task("loading data", total=3)
        interactions = load(data, data_format)
        bar.update(task, advance=1, description=f"fitting {cfg.name}")
        inputs = {"data": interactions.fingerprint(), "config": file_fingerprint(config)}
        with track("train", config=cfg, inputs=inputs) as run:
            t0 = time.perf_counter()
            pipe = Pipeline(cfg).fit(interactions)
            fit_seconds = time.perf_counter() - t0
            bar.update(task, advance=1, description="saving")
            info: dict[str, Any] = {
                "name": cfg.name, "config_file": str(config), "data": str(data),
                "data_fingerprint": interactions.fingerprint(),
                "n_users": interactions.n_users, "n_items": interactions.n_items,
                "n_interactions": len(interactions), "fit_seconds": fit_seconds,
                "versions": pipe.versions()}
            if pipe.ranker is not None and hasattr(pipe.ranker, "train_report"):
                info["ranker"] = pipe.ranker.train_report
            with atomic_dir(out_dir) as tmp:
                pipe.save(tmp / "pipeline")
                pq.write_table(pa.table({"user_id": interactions.users.ids}),
                               tmp / "users.parquet")
                pq.write_table(pa.table({"item_id": interactions.items.ids}),
                               tmp / "items.parquet")
                write_json(tmp / "train.json", info)
            run.log_metrics({"fit_seconds": fit_seconds, "n_users": interactions.n_users,
                             "n_items": interactions.n_items})
            run.log_dict(info, "train.json")
            run.set_tags({"pipeline.version": pipe.version})
            bar.update(task, advance=1, description="done")
    console.print(f"trained [bold]{cfg.name}[/] (version {pipe.version}) in "
                  f"{fit_seconds:.1f}s → {out_dir}")


def _read_users(path: Path, ids: pa.Array) -> pa.Array:
    """External user ids from a file: a ``user_id`` column (CSV/TSV/Parquet) or one id
    per line (``.txt``), cast to the vocabulary's id type."""
    from recscope.data.readers import read_table

    if not path.exists():
        raise DataValidationError("users file not found", file=str(path))
    if path.suffix.lower() == ".txt":
        values = pa.array([s.strip() for s in path.read_text().splitlines() if s.strip()])
    else:
        table = read_table(path)
        if "user_id" not in table.column_names:
            raise DataValidationError(f"no user_id column; found {table.column_names}",
                                      file=str(path), column="user_id")
        values = table.column("user_id").combine_chunks()
    try:
        return pc.cast(values, ids.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataValidationError(f"user ids cannot be read as {ids.type}: {exc}",
                                  file=str(path), column="user_id") from None


def recommend(
    model_dir: Annotated[Path, typer.Argument(help="directory written by recscope train")],
    out: Annotated[Path, typer.Option("--out", help="rankings Parquet to write")],
    users: Annotated[Path | None, typer.Option("--users", help="file of user ids")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="every user the model knows")
                         ] = False,
    k: Annotated[int, typer.Option("--k", min=1, help="list length")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 1024,
) -> None:
    """Write top-K rankings with external ids for the given users."""
    from recscope.io import write_parquet
    from recscope.models.base import Component
    from recscope.tracking import track

    if (users is None) == (not all_users):
        raise ConfigError("give exactly one of --users FILE or --all", key="--users")
    for name in ("pipeline", "users.parquet", "items.parquet"):
        if not (model_dir / name).exists():
            raise DataValidationError(f"not a model directory: {name} missing",
                                      file=str(model_dir))
    user_ids = pq.read_table(model_dir / "users.parquet").column("user_id").combine_chunks()
    item_ids = pq.read_table(model_dir / "items.parquet").column("item_id").combine_chunks()
    model = Component.load(model_dir / "pipeline")
    if all_users:
        ext = user_ids
        index = np.arange(len(user_ids), dtype=np.int32)
    else:
        assert users is not None
        ext = _read_users(users, user_ids)
        from recscope.data.vocab import Vocabulary

        index = Vocabulary(user_ids, name="user_id").index(ext, missing="ignore")
        unknown = index < 0
        # unknown users get indices past the vocabulary: the cold-start fallback
        index = np.where(unknown, len(user_ids) + np.cumsum(unknown) - 1, index).astype(
            np.int32)
        if unknown.any():
            console.print(f"{int(unknown.sum())} user(s) unknown to the model get the "
                          "cold-start (popularity) ranking")
    with track("recommend", config={"model_dir": str(model_dir), "k": k,
                                    "users": str(users) if users else "all"},
               inputs={"model": model.version}) as run:
        parts = []
        t0 = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("recommending", total=len(index))
            for start in range(0, len(index), batch_size):
                sl = slice(start, start + batch_size)
                rl = model.recommend(index[sl], k)
                n, kk = rl.items.shape
                ok = rl.items >= 0
                rows = np.repeat(np.arange(n), kk).reshape(n, kk)[ok] + start
                parts.append(pa.table({
                    "user_id": ext.take(pa.array(rows)),
                    "item_id": item_ids.take(pa.array(rl.items[ok])),
                    "score": pa.array(rl.scores[ok], pa.float64()),
                    "rank": pa.array(np.tile(np.arange(1, kk + 1, dtype=np.int32), n)
                                     .reshape(n, kk)[ok])}))
                bar.update(task, advance=n)
        seconds = time.perf_counter() - t0
        table = pa.concat_tables(parts) if parts else pa.table(
            {"user_id": pa.array([], ext.type), "item_id": pa.array([], item_ids.type),
             "score": pa.array([], pa.float64()), "rank": pa.array([], pa.int32())})
        write_parquet(out, table)
        run.log_metrics({"users": len(index), "rows": table.num_rows, "seconds": seconds,
                         "users_per_second": len(index) / max(seconds, 1e-9)})
        run.log_artifact(out)
    console.print(f"wrote {table.num_rows:,} rows for {len(index):,} users → {out} "
                  f"({len(index) / max(seconds, 1e-9):,.0f} users/s)")

