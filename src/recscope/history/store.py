"""The history store: one table of candidates and everything measured about them.

One row per (``model_version``, ``experiment``): identity (``candidate_id``, ``family``,
``model_version``, ``experiment``, ``split_fingerprint`` of the offline test split,
``source``), offline deltas against the baseline (``offline_ndcg_*``,
``offline_recall_*``), the OPE estimate (``ope_*``), the replay estimate (``replay_*``),
per metric ``m`` the online readout (``online_m_estimate``, ``_ci_low``, ``_ci_high``,
``_se``, ``_p_value``, ``_mde``) and its day-by-day cumulative readouts
(``online_m_daily_estimate``, ``_daily_se``, ``_daily_p_value``, ``_daily_seq_p``: lists),
the truth when known (``true_m``, ``true_m_long_run``: simulator only), ``decision``,
``changed`` components, ``attribution`` and ``params`` (JSON text). Effects are relative
(``0.02`` = +2%); offline deltas are absolute metric differences.

Sources: candidate records (JSON files, ``kind = "history_candidate"``, as ``recscope
history simulate`` writes them), candidate folders (a ``candidate.json`` with the
identity and the experiment's scorecard JSON beside it), and MLflow runs tagged
``recscope.history = candidate``. They are unioned and de-duplicated in DuckDB; the same
SQL runs on Spark for a large history (:func:`union_sql`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recscope.errors import ConfigError, DataValidationError

KIND = "history_candidate"
KEYS = ("model_version", "experiment")
IDENTITY = ("candidate_id", "family", "model_version", "experiment", "split_fingerprint",
            "source", "decision")
SIGNALS = {"offline_ndcg": ("offline", "ndcg@10"), "offline_recall": ("offline", "recall@20"),
           "ope": ("ope", None), "replay": ("replay", None)}
STATS = ("estimate", "ci_low", "ci_high", "se")
ONLINE_STATS = ("estimate", "ci_low", "ci_high", "se", "p_value", "mde", "control_mean")
DAILY = ("estimate", "se", "p_value", "seq_p")
JSON_COLUMNS = ("changed", "attribution", "params")


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def record_to_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one candidate record (the corpus' JSON) into a history row."""
    row: dict[str, Any] = {k: rec.get(k) for k in IDENTITY}
    row["novelty"] = rec.get("novelty")
    row["interference"] = rec.get("interference")
    for col, (part, metric) in SIGNALS.items():
        block = rec.get(part) or {}
        if metric is not None:
            block = block.get(metric) or {}
        for s in STATS:
            row[f"{col}_{s}"] = _num(block.get(s))
        if col == "ope":
            row["ope_ess"] = _num(block.get("ess"))
    for m, block in (rec.get("online") or {}).items():
        for s in ONLINE_STATS:
            row[f"online_{m}_{s}"] = _num(block.get(s))
    for m, block in (rec.get("online_daily") or {}).items():
        for s in DAILY:
            vals = block.get(s)
            row[f"online_{m}_daily_{s}"] = None if vals is None else [_num(v) for v in vals]
    for m, block in (rec.get("truth") or {}).items():
        row[f"true_{m}"] = _num(block.get("effect"))
        row[f"true_{m}_long_run"] = _num(block.get("long_run"))
    row["changed"] = json.dumps(rec.get("changed") or [])
    row["attribution"] = json.dumps(rec["attribution"]) if rec.get("attribution") else None
    row["params"] = json.dumps({k: rec[k] for k in ("retriever", "ranker", "reranker",
                                                     "temperature") if k in rec})
    return row


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A history table from rows (columns in a stable order; NaN for missing numbers)."""
    if not rows:
        raise DataValidationError("no candidates found")
    cols: list[str] = []
    for r in rows:
        cols.extend(c for c in r if c not in cols)
    arrays = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        sample = next((v for v in vals if v is not None), None)
        if isinstance(sample, list):
            arrays[c] = pa.array(vals, pa.list_(pa.float64()))
        elif isinstance(sample, bool):
            arrays[c] = pa.array(vals, pa.bool_())
        elif isinstance(sample, float | int) and not isinstance(sample, bool):
            arrays[c] = pa.array([math.nan if v is None else float(v) for v in vals],
                                 pa.float64())
        else:
            arrays[c] = pa.array([None if v is None else str(v) for v in vals], pa.string())
    return pa.table(arrays)


def online_metrics(table: pa.Table) -> list[str]:
    """Metrics with an online readout column (``online_<m>_estimate``)."""
    return [c[len("online_"):-len("_estimate")] for c in table.column_names
            if c.startswith("online_") and c.endswith("_estimate") and "_daily_" not in c]


def check_history(table: pa.Table, file: str | None = None, *,
                  need_online: bool = True) -> pa.Table:
    """Refuse a history that cannot be learned from: no online readouts, or offline
    metrics from different test splits (their deltas are not comparable)."""
    for c in ("candidate_id", "family", "split_fingerprint"):
        if c not in table.column_names:
            raise DataValidationError("not a history table (missing column)", file=file,
                                      column=c)
    if table.num_rows == 0:
        raise DataValidationError("the history has no candidates", file=file)
    if need_online:
        has = [m for m in online_metrics(table)
               if np.isfinite(table.column(f"online_{m}_estimate").to_numpy(
                   zero_copy_only=False).astype(float)).any()]
        if not has:
            raise DataValidationError("the history has no online results (no candidate "
                                      "has an online_<metric>_estimate); run experiments or "
                                      "build it from a store that holds them", file=file)
    fps = sorted({v for v in table.column("split_fingerprint").to_pylist() if v})
    if len(fps) > 1:
        ids = table.column("candidate_id").to_pylist()
        fp = table.column("split_fingerprint").to_pylist()
        other = next(i for i, v in enumerate(fp) if v and v != fp[next(
            j for j, w in enumerate(fp) if w)])
        raise DataValidationError(
            f"candidates' offline metrics were computed on different splits (fingerprints "
            f"{', '.join(fps[:3])}); candidate {ids[other]!r} differs from the first; "
            "build one history per split", file=file, column="split_fingerprint", row=other)
    return table


def read_history(path: str | Path, *, need_online: bool = True) -> pa.Table:
    """Read and check a history Parquet file (errors name the file)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise DataValidationError("history file not found", file=str(p))
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"not a Parquet history: {exc}", file=str(p)) from None
    return check_history(table, str(p), need_online=need_online)


# ---------------------------------------------------------------------- sources
def _candidate_folder(folder: Path) -> list[dict[str, Any]]:
    """A folder with ``candidate.json`` (identity) and experiment scorecards beside it."""
    meta_path = folder / "candidate.json"
    meta = _load_json(meta_path)
    missing = [k for k in ("candidate_id", "model_version", "experiment") if k not in meta]
    if missing:
        raise DataValidationError("candidate.json lacks a key", file=str(meta_path),
                                  column=missing[0])
    rec: dict[str, Any] = {k: meta.get(k) for k in (*IDENTITY, "changed", "attribution",
                                                    "offline", "ope", "replay")}
    rec["family"] = rec.get("family") or meta["candidate_id"]
    rec["source"] = "results"
    rec["online"] = {}
    for p in sorted(folder.glob("*.json")):
        if p == meta_path:
            continue
        data = _load_json(p)
        if data.get("kind") != "experiment_scorecard":
            continue
        variant = meta.get("variant")
        for r in data.get("results", []):
            if variant is not None and r.get("variant") != variant:
                continue
            lo, hi = _num(r.get("rel_ci_low")), _num(r.get("rel_ci_high"))
            est = _num(r.get("rel_effect", r.get("estimate")))
            se = (hi - lo) / (2 * 1.959963984540054)
            rec["online"][r["metric"]] = {"estimate": est, "ci_low": lo, "ci_high": hi,
                                          "se": se, "p_value": _num(r.get("p_value")),
                                          "mde": 2.8 * se,
                                          "control_mean": _num(r.get("control_mean"))}
    return [rec]


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"not readable JSON: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise DataValidationError("expected a JSON object", file=str(path))
    return data


def records_from_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Candidate records from result files and folders (searched recursively)."""
    recs: list[dict[str, Any]] = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise DataValidationError("results path not found", file=str(root))
        files = [root] if root.is_file() else sorted(root.rglob("*.json"))
        for p in files:
            if p.name == "candidate.json":
                recs.extend(_candidate_folder(p.parent))
                continue
            if p.name.startswith("."):
                continue
            data = _load_json(p)
            if data.get("kind") == KIND:
                recs.append(data)
    return recs


def log_candidates(records: list[dict[str, Any]], store: str | None) -> int:
    """Log every record as an MLflow run (tags: identity and daily readouts; metrics: the
    numeric columns; one batch per run) so :func:`rows_from_mlflow` can rebuild the
    history."""
    import time

    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from recscope.tracking import track

    client = None
    for rec in records:
        row = record_to_row(rec)
        tags = {"recscope.history": "candidate"}
        metrics = {}
        for k, v in row.items():
            if isinstance(v, list) or k in JSON_COLUMNS or isinstance(v, str):
                tags[f"history.{k}"] = json.dumps(v) if isinstance(v, list) else str(v)
            elif isinstance(v, bool):
                tags[f"history.{k}"] = str(v).lower()
            elif v is not None and isinstance(v, float) and math.isfinite(v):
                metrics[k] = v
        with track("history.candidate", store=store,
                   tags={"recscope.history": "candidate"}) as run:
            client = client or MlflowClient(tracking_uri=run.uri)
            now = int(time.time() * 1000)
            try:
                client.log_batch(run.run_id,
                                 metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                                 tags=[RunTag(k, v) for k, v in tags.items()])
            except Exception as exc:  # MLflow errors: one line naming the store
                raise DataValidationError(f"cannot log to the tracking store: {exc}"
                                          .splitlines()[0], file=run.uri) from None
    return len(records)


def rows_from_mlflow(uri: str) -> list[dict[str, Any]]:
    """History rows from MLflow runs tagged ``recscope.history = candidate``."""
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        client = MlflowClient(tracking_uri=uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        runs: list[Any] = []
        token = None
        while exps:
            page = client.search_runs(exps, "tags.`recscope.history` = 'candidate'",
                                      max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except Exception as exc:  # MLflow / SQLAlchemy errors: one line naming the store
        raise DataValidationError(f"cannot read the tracking store: {exc}".splitlines()[0],
                                  file=uri) from None
    rows = []
    for r in runs:
        row: dict[str, Any] = {}
        for k, v in r.data.tags.items():
            if not k.startswith("history."):
                continue
            key = k[len("history."):]
            if "_daily_" in key:
                row[key] = [_num(x) for x in json.loads(v)]
            elif key in ("novelty", "interference"):
                row[key] = v == "true"
            else:
                row[key] = None if v == "None" else v
        for k, v in r.data.metrics.items():
            row[k] = float(v)
        row["mlflow_run_id"] = r.info.run_id
        rows.append(row)
    return rows


def union_sql(sources: Mapping[str, Sequence[str]], dialect: str = "duckdb") -> str:
    """SQL that unions the ``sources`` (table name -> its columns; a column a source lacks
    is NULL there) and keeps one row per (model_version, experiment), the first source
    winning. Plain SQL (explicit column lists, ``UNION ALL``, ``ROW_NUMBER``): the same
    query runs in DuckDB and in Spark SQL (``dialect="spark"`` only changes the
    identifier quotes) for a history too large for one machine."""
    if dialect not in ("duckdb", "spark"):
        raise ConfigError(f"unknown SQL dialect {dialect!r}; expected duckdb or spark",
                          key="dialect")
    q = '"' if dialect == "duckdb" else "`"

    def ident(name: str) -> str:
        return q + name.replace(q, q + q) + q

    cols: list[str] = []
    for c in sources.values():
        cols.extend(x for x in c if x not in cols)
    for need in ("model_version", "experiment", "candidate_id"):
        if need not in cols:
            raise DataValidationError("a history source lacks a key column", column=need)
    parts = []
    for i, (name, have) in enumerate(sources.items()):
        sel = ", ".join(ident(c) if c in have else f"NULL AS {ident(c)}" for c in cols)
        parts.append(f"SELECT {sel}, {i} AS _source_rank FROM {ident(name)}")
    out_cols = ", ".join(ident(c) for c in cols)
    return (f"SELECT {out_cols} FROM (SELECT {out_cols}, ROW_NUMBER() OVER (PARTITION BY "
            f"{ident('model_version')}, {ident('experiment')} ORDER BY _source_rank, "
            f"{ident('candidate_id')}) AS _rn FROM ({' UNION ALL '.join(parts)}) u) t "
            f"WHERE _rn = 1 ORDER BY {ident('candidate_id')}")


def build_history(*, tracking: str | None = None, results: Iterable[str | Path] = (),
                  ) -> pa.Table:
    """One history table from MLflow runs and result files, de-duplicated in DuckDB."""
    import duckdb

    tables: dict[str, pa.Table] = {}
    res = [record_to_row(r) for r in records_from_results(results)]
    if res:
        tables["results_rows"] = rows_to_table(res)
    if tracking is not None:
        from recscope.tracking import tracking_uri

        ml = rows_from_mlflow(tracking_uri(tracking))
        if ml:
            tables["mlflow_rows"] = rows_to_table(ml)
    if not tables:
        where = ", ".join([*(str(p) for p in results), *([tracking] if tracking else [])])
        raise DataValidationError("no history candidates found (no candidate records, "
                                  "candidate folders or MLflow runs tagged "
                                  "recscope.history)", file=where or None)
    con = duckdb.connect()
    for name, t in tables.items():
        con.register(name, t)
    out = con.sql(union_sql({k: t.column_names for k, t in tables.items()})).to_arrow_table()
    return out


def summary(table: pa.Table, sql: str | None = None) -> pa.Table:
    """``history show``: per family, candidates (``n``), launches and mean signals
    (offline NDCG delta, OPE, replay, online readout, truth of clicks), or the result of
    ``sql`` over a view called ``history``."""
    import duckdb

    con = duckdb.connect()
    con.register("history", table)
    if sql is not None:
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise ConfigError(f"query failed: {str(exc).splitlines()[0]}", key="sql") from None
    has = set(table.column_names)
    parts = ["family", "COUNT(*) AS n"]
    if "decision" in has:
        parts.append("COUNT(*) FILTER (WHERE decision = 'launch') AS launch")
    for c, label in (("offline_ndcg_estimate", "dNDCG"), ("ope_estimate", "OPE"),
                     ("replay_estimate", "replay"), ("online_clicks_estimate", "online"),
                     ("true_clicks", "truth")):
        if c in has:
            parts.append(f'ROUND(AVG({c}) FILTER (WHERE NOT isnan({c})), 3) AS "{label}"')
    return con.sql(f"SELECT {', '.join(parts)} FROM history GROUP BY family "
                   "ORDER BY family").to_arrow_table()
