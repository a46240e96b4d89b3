"""``recscope evaluate``: offline metrics with intervals, paired comparisons and slices.

Contract: ``recscope evaluate --rankings R --truth T [--metric ndcg@10 ...] [--compare R2 ...]
[--slice COLUMN] [--json OUT] [--html OUT] [--per-user OUT]``. The JSON is the result's own
``to_dict`` (one shape, see docs/offline.md): an
:class:`~recscope.offline.EvaluationResult` (``kind: "evaluation"``: one row per metric
under ``estimates`` with ``estimate``, ``ci_low``, ``ci_high``, ``se``, ``n``,
``normal_low``, ``normal_high``; ``slices`` rows with ``--slice``) or, with ``--compare``,
a :class:`~recscope.offline.ComparisonResult` (``kind: "comparison"``: every system's
evaluation under ``systems`` and one paired-test row per (system, metric) under ``tests``
with the difference, its interval, ``p_value`` and ``p_value_adjusted``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from recscope.cli.common import HtmlOut, JsonOut, Tracking
from recscope.errors import ConfigError

_TESTS = ("t", "wilcoxon", "randomisation")
_ADJUST = ("holm", "bh", "none")
_MISSING = ("zero", "skip", "error")


def _names(paths: list[Path]) -> list[str]:
    """System names: file stems, made unique by falling back to the path."""
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else str(p) for s, p in zip(stems, paths, strict=True)]


def _per_user_table(results: dict[str, Any], users: Any) -> Any:
    """Long per-user table: system, user_id (external), n_relevant, one column per metric."""
    import pyarrow as pa

    parts = []
    for name, res in results.items():
        t = res.per_user
        ids = users.lookup(t.column("user").to_numpy())
        parts.append(pa.table({"system": pa.array([name] * t.num_rows), "user_id": ids,
                               **{c: t.column(c) for c in t.column_names if c != "user"}}))
    return pa.concat_tables(parts, promote_options="default")


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _check_inputs(paths: list[Path], truth: Path, exclude: Path | None,
                  folders: bool = False) -> None:
    """Each input exists and is a file (or, with ``folders``, a Parquet dataset folder or a
    ``table:NAME``), named by its option, before anything runs."""
    named = [("--truth", truth), *[("--rankings" if i == 0 else "--compare", p)
                                   for i, p in enumerate(paths)]]
    if exclude is not None:
        named.append(("--exclude", exclude))
    from recscope.io import did_you_mean

    for option, p in named:
        if folders and str(p).startswith("table:"):
            continue
        if not p.exists():
            raise ConfigError(f"file not found: {p}{did_you_mean(p)}", key=option)
        if p.is_dir() and not folders:
            raise ConfigError(f"{p} is a folder; expected a file (Parquet dataset folders "
                              f"need --engine stream or spark)", key=option)
        if p.is_dir() and not any(p.rglob("*.parquet")):
            raise ConfigError(f"{p} is a folder without Parquet files; expected a file or "
                              f"a Parquet dataset folder", key=option)


def evaluate(
    rankings: Annotated[Path, typer.Option("--rankings", help="Parquet/CSV: user_id, item_id, "
                                           "score or rank.")],
    truth: Annotated[Path, typer.Option("--truth", help="Parquet/CSV: user_id, item_id, "
                                        "optional grade.")],
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Metric, e.g. ndcg@10 (repeatable).")] = None,
    compare: Annotated[list[Path] | None, typer.Option(
        "--compare", help="Another rankings file to compare on the same users (repeatable).")
    ] = None,
    slice_: Annotated[list[str] | None, typer.Option(
        "--slice", help="Per-user column of the truth or rankings file to slice by.")] = None,
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
    per_user: Annotated[Path | None, typer.Option(
        "--per-user", metavar="FILE",
        help="Write every system's per-user values (Parquet, external ids).")] = None,
    exclude: Annotated[Path | None, typer.Option(
        "--exclude", help="Parquet/CSV of (user_id, item_id) pairs to drop from lists and "
        "truth, e.g. training items (full ranking with seen-item exclusion).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples over users (>= 0; "
                                           "0: normal intervals).")] = 1000,
    confidence: Annotated[float, typer.Option(help="Interval level, in (0, 1).")] = 0.95,
    test: Annotated[str, typer.Option(help="t | wilcoxon | randomisation")] = "t",
    adjust: Annotated[str, typer.Option(help="holm | bh | none")] = "holm",
    missing: Annotated[str, typer.Option(
        help="Users with relevant items but no list: zero | skip | error.")] = "zero",
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and randomisation.")] = 0,
    engine: Annotated[str, typer.Option(
        help="memory | stream (out of core: Parquet read in batches, DuckDB sorts by user) "
        "| spark (local Spark, or the active session; inputs may be table:NAME) | auto "
        "(stream above 50M input rows).")] = "auto",
    memory_limit: Annotated[str, typer.Option(
        help="stream engine: DuckDB memory limit before it spills to disk.")] = "2GB",
    tracking: Tracking = None,
) -> None:
    """Evaluate ranked lists against relevance truth, with intervals and paired tests.

    With --engine stream or spark the inputs may be Parquet dataset folders
    (hive-partitioned too); intervals come from a Poisson bootstrap computed in the same
    pass, comparisons use the paired t-test, and no per-user table is kept.

    Example: recscope evaluate --rankings rankings.parquet --truth
    split/test/interactions.parquet --metric ndcg@10 --metric recall@20 --json eval.json
    """
    import warnings

    from recscope.cli.common import (
        check_outputs,
        console,
        file_fingerprint,
        progress,
    )
    from recscope.io import write_all
    from recscope.offline import DEFAULT_METRICS, parse_metric
    from recscope.offline import evaluate as run_evaluate
    from recscope.offline.compare import compare as run_compare
    from recscope.offline.inputs import load_inputs
    from recscope.offline.slices import slice_users
    from recscope.tracking import track

    metrics = list(metric or DEFAULT_METRICS)
    paths = [rankings, *(compare or [])]
    names = _names(paths)
    if missing not in _MISSING:
        raise ConfigError(f"must be zero, skip or error, got {missing!r}", key="--missing")
    if test not in _TESTS:
        raise ConfigError(f"must be t, wilcoxon or randomisation, got {test!r}", key="--test")
    if adjust not in _ADJUST:
        raise ConfigError(f"must be holm, bh or none, got {adjust!r}", key="--adjust")
    if bootstrap < 0:
        raise ConfigError(f"must be >= 0, got {bootstrap}", key="--bootstrap")
    if seed < 0:
        raise ConfigError(f"must be >= 0, got {seed}", key="--seed")
    if not 0 < confidence < 1:
        raise ConfigError(f"must be in (0, 1), got {confidence}", key="--confidence")
    for m in metrics:
        parse_metric(m)
    if engine not in ("auto", "memory", "stream", "spark"):
        raise ConfigError(f"must be auto, memory, stream or spark, got {engine!r}",
                          key="--engine")
    check_outputs(json_out, html_out, per_user, tracking=tracking)
    _check_inputs(paths, truth, exclude, folders=engine != "memory")
    from recscope.offline.scale import choose_engine

    engine = choose_engine(engine, [str(p) for p in [*paths, truth]])
    if engine != "memory":
        if per_user is not None:
            raise ConfigError(f"the {engine} engine keeps no per-user table; drop --per-user "
                              f"or use --engine memory", key="--per-user")
        _evaluate_scaled(engine, names, paths, truth, exclude, metrics, slice_ or [],
                         bootstrap=bootstrap, confidence=confidence, test=test, adjust=adjust,
                         missing=missing, seed=seed, memory_limit=memory_limit,
                         json_out=json_out, html_out=html_out, tracking=tracking)
        return
    config = {"metrics": metrics, "bootstrap": bootstrap, "confidence": confidence,
              "test": test, "adjust": adjust, "missing": missing, "seed": seed,
              "slice": list(slice_ or []), "systems": names,
              "exclude": str(exclude) if exclude else None}
    with progress() as bar:
        task = bar.add_task("reading inputs", total=len(paths) + 2)
        data = load_inputs(truth, dict(zip(names, paths, strict=True)), exclude)
        results = {}
        notes: dict[str, Any] = dict(data.notes)
        for name in names:
            bar.update(task, advance=1, description=f"evaluating {name}")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = run_evaluate(data.rankings[name], data.truth, metrics,
                                   exclude=data.exclude, n_items=len(data.items),
                                   bootstrap=bootstrap, confidence=confidence,
                                   missing=missing,  # type: ignore[arg-type]
                                   seed=seed)
            info = {**res.info,
                    **{k.removeprefix(f"{name}."): v for k, v in data.notes.items()
                       if k.startswith(f"{name}.") or k.startswith("exclude.")}}
            if caught:
                info["warnings"] = [str(w.message) for w in caught]
            results[name] = dataclasses.replace(res, system=name, info=info)
            notes.update({f"{name}.{k}": v for k, v in info.items()})
        bar.update(task, advance=1, description="comparing and slicing")
        if slice_:
            rows = [e for col in slice_ for e in
                    slice_users(results[names[0]], data.user_column(col), by=col,
                                seed=seed).effects()]
            results[names[0]] = dataclasses.replace(results[names[0]], slices=rows)
        comparison = run_compare(results, test=test, adjustment=adjust, n_boot=bootstrap,
                                 seed=seed) if len(names) > 1 else None
        bar.update(task, advance=1, description="done")
    result = comparison if comparison is not None else results[names[0]]
    results[names[0]].print(console)
    if comparison is not None:
        comparison.print(console)
    for k, v in notes.items():
        if k.endswith("users_not_in_truth") and v:
            console.print(f"note: {k.split('.')[0]}: {v} users in the rankings are not in "
                          "the truth; they have no relevant items and are not counted",
                          markup=False, highlight=False)
        if k.endswith(".warnings"):
            for w in v:
                console.print(f"note: {k.split('.')[0]}: {w}", markup=False, highlight=False)
    inputs = {"truth": file_fingerprint(truth),
              **{f"rankings.{n}": file_fingerprint(p) for n, p in zip(names, paths, strict=True)}}
    if exclude is not None:
        inputs["exclude"] = file_fingerprint(exclude)
    with track("evaluate", config=config, inputs=inputs, store=tracking) as run:
        main = results[names[0]]
        run.log_metrics({e.metric: e.estimate for e in main.estimates})
        run.log_metrics({f"{e.metric}.ci_low": e.ci_low for e in main.estimates})
        run.log_metrics({f"{e.metric}.ci_high": e.ci_high for e in main.estimates})
        run.log_metrics({"n_users": main.n_users})
        if comparison is not None:
            run.log_metrics({f"{t['system']}.{t.metric}.p_value_adjusted":
                             t["p_value_adjusted"] for t in comparison.tests})
        run.log_dict(result.to_dict(), "evaluation.json")
        outputs: dict[Path, str | bytes] = {}
        if json_out is not None:
            outputs[json_out] = result.to_json() + "\n"
        if html_out is not None:
            outputs[html_out] = result.to_html()
        if per_user is not None:
            outputs[per_user] = _parquet_bytes(_per_user_table(results, data.users))
        for path in write_all(outputs):  # all or none
            run.log_artifact(path)
            console.print(f"written to {path}", markup=False, highlight=False)


def _evaluate_scaled(engine: str, names: list[str], paths: list[Path], truth: Path,
                     exclude: Path | None, metrics: list[str], slices: list[str], *,
                     bootstrap: int, confidence: float, test: str, adjust: str,
                     missing: str, seed: int, memory_limit: str, json_out: Path | None,
                     html_out: Path | None, tracking: Path | None) -> None:
    """``--engine stream`` / ``spark``: compute, print, then track and write all outputs."""
    from recscope.cli.common import console, write_outputs
    from recscope.offline.scale import evaluate_spark, evaluate_stream
    from recscope.tracking import track

    kw = {"exclude": str(exclude) if exclude else None, "bootstrap": bootstrap,
          "confidence": confidence, "missing": missing, "seed": seed, "slices": slices,
          "test": test, "adjustment": adjust}
    systems = {n: str(p) for n, p in zip(names, paths, strict=True)}
    if engine == "spark":
        result = evaluate_spark(systems, str(truth), metrics, **kw)  # type: ignore[arg-type]
    else:
        result = evaluate_stream(systems, str(truth), metrics,  # type: ignore[arg-type]
                                 memory_limit=memory_limit, **kw)
    if hasattr(result, "systems"):
        result.systems[names[0]].print(console)
    result.print(console)
    config = {"metrics": metrics, "bootstrap": bootstrap, "confidence": confidence,
              "test": test, "adjust": adjust, "missing": missing, "seed": seed,
              "slice": slices, "systems": names, "engine": engine,
              "exclude": str(exclude) if exclude else None}
    inputs = {"truth": str(truth), **{f"rankings.{n}": str(p) for n, p in systems.items()}}
    with track("evaluate", config=config, inputs=inputs, store=tracking) as run:
        main = result.systems[names[0]] if hasattr(result, "systems") else result
        run.log_metrics({e.metric: e.estimate for e in main.estimates})
        run.log_metrics({"n_users": main.n_users})
        write_outputs(result, json_out, html_out, run=run, what="evaluation")
