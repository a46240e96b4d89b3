"""``recscope evaluate``: offline metrics with intervals, paired comparisons and slices.

Contract: ``recscope evaluate --rankings R --truth T [--metric ndcg@10 ...] [--compare R2 ...]
[--slice COLUMN] [--json OUT] [--html OUT]``. The JSON has, for each metric name,
``mean``, ``ci_low``, ``ci_high``, plus ``n_users``; with ``--compare`` every compared
system appears under ``compare`` with ``p_value`` and ``p_value_adjusted`` per metric (and,
with exactly one ``--compare``, those two fields are also on the top-level metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recscope.errors import ConfigError


def _names(paths: list[Path]) -> list[str]:
    """System names: file stems, made unique by falling back to the path."""
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else str(p) for s, p in zip(stems, paths, strict=True)]


def build_report(results: dict[str, Any], comparison: Any, slices: dict[str, Any],
                 notes: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of the CLI contract (see the module docstring)."""
    names = list(results)
    main = results[names[0]]
    doc: dict[str, Any] = {}
    for metric, iv in main.summary.items():
        doc[metric] = {"mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high,
                       "normal_low": iv.normal_low, "normal_high": iv.normal_high,
                       "n": iv.n}
    doc["n_users"] = main.n_users
    doc["system"] = names[0]
    doc["confidence"] = main.confidence
    doc["notes"] = notes
    if comparison is not None:
        doc["test"] = comparison.test
        doc["adjustment"] = comparison.adjustment
        doc["compare"] = {}
        for name in names[1:]:
            res = results[name]
            entry: dict[str, Any] = {"n_users": res.n_users}
            for t in comparison.tests[name]:
                iv = res.summary[t.metric]
                entry[t.metric] = {
                    "mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high,
                    "diff": t.diff, "diff_ci_low": t.diff_ci_low, "diff_ci_high": t.diff_ci_high,
                    "relative": t.relative, "cohens_dz": t.cohens_dz, "n_paired": t.n,
                    "p_value": t.p_value, "p_value_adjusted": t.p_value_adjusted,
                    "p_t": t.p_t, "p_wilcoxon": t.p_wilcoxon,
                    "p_randomisation": t.p_randomisation, "p_holm": t.p_holm, "p_bh": t.p_bh}
            doc["compare"][name] = entry
        if len(names) == 2:
            for t in comparison.tests[names[1]]:
                doc[t.metric]["p_value"] = t.p_value
                doc[t.metric]["p_value_adjusted"] = t.p_value_adjusted
    if slices:
        doc["slices"] = {col: s.to_dict()["groups"] for col, s in slices.items()}
    return doc


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


def _html(results: dict[str, Any], comparison: Any, slices: dict[str, Any],
          notes: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    from recscope.report import HtmlReport

    names = list(results)
    main = results[names[0]]
    rep = HtmlReport("Offline evaluation", f"{main.n_users} users; "
                                           f"{round(main.confidence * 100)}% intervals")
    fig = go.Figure()
    for name, res in results.items():
        ms = res.metrics
        fig.add_bar(name=name, x=ms, y=[res.mean(m) for m in ms],
                    error_y={"type": "data", "symmetric": False,
                             "array": [res.ci(m)[1] - res.mean(m) for m in ms],
                             "arrayminus": [res.mean(m) - res.ci(m)[0] for m in ms]})
    fig.update_layout(barmode="group", height=380, margin={"t": 30})
    rep.figure(fig)
    for name, res in results.items():
        rep.heading(f"System {name}").table(res.rows())
    if comparison is not None:
        rep.heading(f"Paired tests against {names[0]} ({comparison.test} test, "
                    f"{comparison.adjustment} adjustment)").table(comparison.rows())
    for col, s in slices.items():
        rep.heading(f"Slices by {col}").table(s.rows())
    rep.heading("Protocol and input notes").key_values({k: str(v) for k, v in notes.items()})
    return rep.render()


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
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON here.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")
                        ] = None,
    per_user: Annotated[Path | None, typer.Option(
        "--per-user", help="Write every system's per-user values (Parquet, external ids).")
    ] = None,
    exclude: Annotated[Path | None, typer.Option(
        "--exclude", help="Parquet/CSV of (user_id, item_id) pairs to drop from lists and "
        "truth, e.g. training items (full ranking with seen-item exclusion).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples over users.")] = 1000,
    confidence: Annotated[float, typer.Option(help="Interval level.")] = 0.95,
    test: Annotated[str, typer.Option(help="t | wilcoxon | randomisation")] = "t",
    adjust: Annotated[str, typer.Option(help="holm | bh | none")] = "holm",
    missing: Annotated[str, typer.Option(
        help="Users with relevant items but no list: zero | skip | error.")] = "zero",
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and randomisation.")] = 0,
    out_dir: Annotated[Path | None, typer.Option(
        help="Folder of the tracking store (default: beside --json, else recscope-out).")
    ] = None,
) -> None:
    """Evaluate ranked lists against relevance truth, with intervals and paired tests."""
    import warnings

    from recscope.cli.common import console, file_fingerprint, progress
    from recscope.offline import DEFAULT_METRICS
    from recscope.offline import evaluate as run_evaluate
    from recscope.offline.compare import compare as run_compare
    from recscope.offline.inputs import load_inputs
    from recscope.offline.slices import slice_users
    from recscope.tracking import track

    metrics = list(metric or DEFAULT_METRICS)
    paths = [rankings, *(compare or [])]
    names = _names(paths)
    if missing not in ("zero", "skip", "error"):
        raise ConfigError(f"--missing must be zero, skip or error, got {missing!r}",
                          key="missing")
    if test not in ("t", "wilcoxon", "randomisation"):
        raise ConfigError(f"--test must be t, wilcoxon or randomisation, got {test!r}",
                          key="test")
    if adjust not in ("holm", "bh", "none"):
        raise ConfigError(f"--adjust must be holm, bh or none, got {adjust!r}", key="adjust")
    if not 0 < confidence < 1 or bootstrap < 0:
        raise ConfigError("--confidence must be in (0, 1) and --bootstrap >= 0",
                          key="confidence")
    for m in metrics:
        from recscope.offline import parse_metric

        parse_metric(m)
    config = {"metrics": metrics, "bootstrap": bootstrap, "confidence": confidence,
              "test": test, "adjust": adjust, "missing": missing, "seed": seed,
              "slice": list(slice_ or []), "systems": names,
              "exclude": str(exclude) if exclude else None}
    inputs = {"truth": file_fingerprint(truth)} if truth.exists() else {}
    if exclude is not None and exclude.exists():
        inputs["exclude"] = file_fingerprint(exclude)
    inputs.update({f"rankings.{n}": file_fingerprint(p) for n, p in zip(names, paths, strict=True)
                   if p.exists()})
    store = out_dir or (json_out.parent if json_out else None)
    with track("evaluate", config=config, inputs=inputs, store=store) as run:
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
                                       exclude=data.exclude, n_items=len(data.items), bootstrap=bootstrap,
                                       confidence=confidence, missing=missing,  # type: ignore[arg-type]
                                       seed=seed)
                results[name] = res
                for key, value in res.info.items():
                    notes[f"{name}.{key}"] = value
                for w in caught:
                    notes[f"{name}.warning"] = str(w.message)
            bar.update(task, advance=1, description="comparing")
            comparison = run_compare(results, test=test, adjustment=adjust, n_boot=bootstrap,
                                     seed=seed) if len(names) > 1 else None
            slices = {col: slice_users(results[names[0]], data.user_column(col), by=col,
                                       seed=seed) for col in (slice_ or [])}
            bar.update(task, advance=1, description="done")
        doc = build_report(results, comparison, slices, notes)
        results[names[0]].print(console)
        if comparison is not None:
            comparison.print(console)
        for s in slices.values():
            s.print(console)
        skipped = {k: v for k, v in notes.items() if k.endswith("users_not_in_truth") and v}
        for k, v in skipped.items():
            console.print(f"[yellow]note:[/] {k.split('.')[0]}: {v} users in the rankings are "
                          f"not in the truth; they have no relevant items and are not counted")
        for k, v in notes.items():
            if k.endswith(".warning"):
                console.print(f"[yellow]note:[/] {k.split('.')[0]}: {v}")
        run.log_metrics({m: iv.mean for m, iv in results[names[0]].summary.items()})
        run.log_metrics({f"{m}.ci_low": iv.ci_low for m, iv in results[names[0]].summary.items()})
        run.log_metrics({f"{m}.ci_high": iv.ci_high
                         for m, iv in results[names[0]].summary.items()})
        run.log_metrics({"n_users": results[names[0]].n_users})
        if comparison is not None:
            for name, ts in comparison.tests.items():
                run.log_metrics({f"{name}.{t.metric}.p_value_adjusted": t.p_value_adjusted
                                 for t in ts})
        run.log_dict(doc, "evaluation.json")
        if json_out is not None:
            from recscope.io import write_json

            write_json(json_out, doc)
            run.log_artifact(json_out)
            console.print(f"wrote {json_out}")
        if per_user is not None:
            from recscope.io import write_parquet

            write_parquet(per_user, _per_user_table(results, data.users))
            run.log_artifact(per_user)
            console.print(f"wrote {per_user}")
        if html_out is not None:
            from recscope.io import write_text

            write_text(html_out, _html(results, comparison, slices, notes))
            run.log_artifact(html_out)
            console.print(f"wrote {html_out}")
