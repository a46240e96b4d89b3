"""``recscope train`` and ``recscope recommend``: fit a pipeline, then serve rankings.

Contracts:

* ``recscope train CONFIG --data PATH [--out DIR]`` reads a pipeline TOML or a
  single-model TOML (``component = "ease"``) and any data ``recscope.data.loaders.load``
  understands (a ``recscope data split`` folder means its train part, with the item and
  user side tables), fits, and writes ``DIR`` (default ``recscope-out/models/<name>``;
  :mod:`recscope.orchestration.model_dir`): ``pipeline/`` (the saved model),
  ``users.parquet`` and ``items.parquet`` (the id vocabularies) and ``train.json``
  (versions, timings). The run is logged to tracking. The same config on the same split
  gives the same model as the Python API (``Pipeline(load_config(CONFIG)).fit(split.train)``).
* ``recscope recommend MODEL_DIR (--users FILE | --all) --k 100 --out rankings.parquet``
  writes ``user_id``, ``item_id``, ``score``, ``rank`` (1-based) with EXTERNAL ids, the
  format ``recscope evaluate`` reads. ``--k`` above what the model can return (a
  pipeline: its candidates) is an error. Users unknown to the model get the cold-start
  fallback (training popularity) instead of an error; their count is printed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import typer
from rich.progress import TaskID

from recscope.cli.common import (
    Force,
    Tracking,
    check_outputs,
    console,
    file_fingerprint,
    progress,
)
from recscope.errors import ConfigError, DataValidationError


def train(
    config: Annotated[Path, typer.Argument(help="pipeline or single-model TOML (see "
                                           "examples/ and docs/models.md)")],
    data: Annotated[Path, typer.Option("--data", help="training interactions: a `recscope "
                                       "data split` folder (its train part), a saved "
                                       "folder, a data set or a file recscope can load")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="FOLDER", help="model folder (default recscope-out/models/"
        "NAME; an existing non-empty one needs --force)")] = None,
    force: Force = False,
    data_format: Annotated[str, typer.Option("--format", help="data format (auto detects)")
                           ] = "auto",
    tracking: Tracking = None,
) -> None:
    """Fit the pipeline (or the single model) in CONFIG on DATA and save it with its id
    vocabularies. A pipeline's fit shows one progress line per stage.

    Example: recscope train examples/ml100k.toml --data split/ --out model/
    """
    from recscope.data.loaders import load
    from recscope.models.callbacks import training_callbacks
    from recscope.orchestration.model_dir import save_model_dir
    from recscope.pipeline import ModelConfig, Pipeline, load_train_config
    from recscope.tracking import track

    _input_file(config, "config")
    cfg = load_train_config(config)
    if not data.exists():
        raise DataValidationError("data not found", file=str(data))
    name = cfg.display_name if isinstance(cfg, ModelConfig) else cfg.name
    out_dir = out or Path("recscope-out") / "models" / name
    check_outputs(folder=out_dir, force=force, tracking=tracking)
    with progress() as bar:
        task = bar.add_task("loading data", total=1)
        interactions = load(data, data_format)
        bar.update(task, advance=1)
        train_data = interactions
        if isinstance(cfg, ModelConfig) and cfg.events is not None:
            train_data = interactions.filter(events=cfg.events)
            if len(train_data) == 0:
                raise ConfigError(f"no training rows with events {cfg.events}", key="events",
                                  file=str(config))
        inputs = {"data": interactions.fingerprint(), "config": file_fingerprint(config)}
        tasks: dict[str, TaskID] = {}

        def tick(stage: str, done: float, total: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(float(total), 1.0))
            bar.update(tasks[stage], completed=float(done), total=max(float(total), 1.0))

        with track("train", config=cfg, inputs=inputs, store=tracking) as run, \
                training_callbacks(progress=tick, log_metrics=run.log_metrics):
            t0 = time.perf_counter()
            if isinstance(cfg, ModelConfig):
                model: Any = cfg.build(file=str(config))
                tick(f"fit {cfg.component}", 0, 1)
                model.fit(train_data)
                tick(f"fit {cfg.component}", 1, 1)
            else:
                model = Pipeline(cfg).fit(train_data)
            fit_seconds = time.perf_counter() - t0
            info: dict[str, Any] = {
                "name": name, "config_file": str(config), "data": str(data),
                "data_fingerprint": interactions.fingerprint(), "fit_seconds": fit_seconds}
            ranker = getattr(model, "ranker", None)
            if ranker is not None and hasattr(ranker, "train_report"):
                info["ranker"] = ranker.train_report
            save_model_dir(out_dir, model, interactions, info, force=force)
            run.log_metrics({"fit_seconds": fit_seconds, "n_users": interactions.n_users,
                             "n_items": interactions.n_items})
            run.log_dict(info, "train.json")
            run.set_tags({"model.version": model.version})
    console.print(f"trained [bold]{name}[/] (version {model.version}) in "
                  f"{fit_seconds:.1f}s → {out_dir}")


def _input_file(path: Path, what: str) -> None:
    """One-line errors for an input that is missing or is a folder."""
    if path.is_dir():
        raise ConfigError(f"is a folder; expected a {what} file", file=str(path))
    if not path.exists():
        raise ConfigError(f"{what} file not found", file=str(path))


def _read_users(path: Path, ids: pa.Array) -> pa.Array:
    """External user ids from a file: a ``user_id`` column (CSV/TSV/Parquet) or one id
    per line (``.txt``), cast to the vocabulary's id type."""
    from recscope.data.readers import read_table

    if not path.exists():
        raise DataValidationError("users file not found", file=str(path))
    if path.suffix.lower() == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"not UTF-8 text (byte {exc.object[exc.start]:#x} at "
                                      f"offset {exc.start})", file=str(path)) from None
        values = pa.array([s.strip() for s in text.splitlines() if s.strip()])
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
    model_dir: Annotated[Path, typer.Argument(help="folder written by recscope train")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE",
                                      help="rankings Parquet to write")],
    users: Annotated[Path | None, typer.Option("--users", help="file of user ids")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="every user the model knows")
                         ] = False,
    k: Annotated[int, typer.Option("--k", help="list length (1 up to what the model can "
                                   "return)")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", help="users per batch (1 or "
                                            "more)")] = 1024,
    tracking: Tracking = None,
) -> None:
    """Write top-K rankings with external ids for the given users.

    Example: recscope recommend model/ --all --k 100 --out rankings.parquet
    """
    from recscope.io import write_parquet
    from recscope.orchestration.model_dir import load_model_dir, read_info
    from recscope.tracking import track

    if k < 1:
        raise ConfigError(f"must be 1 or more (got {k})", key="--k")
    if batch_size < 1:
        raise ConfigError(f"must be 1 or more (got {batch_size})", key="--batch-size")
    if (users is None) == (not all_users):
        raise ConfigError("give exactly one of --users FILE or --all", key="--users")
    if users is not None:
        if users.is_dir():
            raise DataValidationError("is a folder; expected a file of user ids",
                                      file=str(users))
        if not users.exists():
            raise DataValidationError("users file not found", file=str(users))
    read_info(model_dir)  # one line when it is not a model folder
    check_outputs(out, tracking=tracking)
    md = load_model_dir(model_dir)
    model, user_ids, item_ids = md.model, md.user_ids, md.item_ids
    max_k = int(getattr(model, "max_k", model.n_items))
    if k > max_k:
        raise ConfigError(f"--k {k} is more than this model can return: at most {max_k} "
                          "items per user (a pipeline returns its retrievers' candidates, "
                          "the sum of their quotas); lower --k or raise the quotas",
                          key="--k")
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
               inputs={"model": model.version}, store=tracking) as run:
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

