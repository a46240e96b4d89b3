"""``recscope data ...`` commands: describe a data set, split it without leakage."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import typer
from rich.table import Table

from recscope.cli.common import Tracking, console, progress
from recscope.data import Interactions
from recscope.data.loaders import detect_format, load
from recscope.data.splits import (
    Split,
    leave_last_n,
    random_holdout,
    temporal_split,
    temporal_split_fraction,
    user_split,
)
from recscope.errors import ConfigError
from recscope.io import write_json

app = typer.Typer(help="Inspect, validate and split interaction data.", no_args_is_help=True)


class DataFormat(StrEnum):
    auto = "auto"
    movielens = "movielens"
    obd = "obd"
    coat = "coat"
    amazon = "amazon"
    mind = "mind"
    lastfm = "lastfm"
    csv = "csv"
    parquet = "parquet"
    recscope = "recscope"
    split = "split"


class Duplicates(StrEnum):
    keep = "keep"
    drop = "drop"
    error = "error"


class Method(StrEnum):
    temporal = "temporal"
    leave_last = "leave-last"
    random = "random"
    user = "user"


_FORMAT_HELP = ("Data format; 'auto' recognises MovieLens, OBD, Coat, Amazon JSON, MIND, "
                "Last.fm folders, saved Interactions directories, 'data split' folders (their "
                "train part), CSV/TSV and Parquet.")
_MAP_HELP = ("Column mapping for csv/parquet, CANONICAL=SOURCE (repeatable), e.g. "
             "--map user_id=uid --map timestamp=ts.")
_OPTION_HELP = ("Loader option KEY=VALUE (repeatable): part=train|test (coat), "
                "policy=random|bts and campaign=all|men|women (obd), history=false (mind).")


_UNITS = ("s", "ms", "us")


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", key=flag)
        out[key.strip()] = val.strip()
    return out


def _option_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    return text


def _load(path: Path, fmt: DataFormat, mapping: list[str] | None, event: str | None,
          value: float | None, duplicates: Duplicates, options: list[str] | None,
          timestamp_unit: str) -> tuple[Interactions, str]:
    if timestamp_unit not in _UNITS:
        raise ConfigError(f"must be one of {', '.join(_UNITS)}, got {timestamp_unit!r}",
                          key="--timestamp-unit")
    resolved = detect_format(path) if fmt is DataFormat.auto else fmt.value
    opts = {k: _option_value(v) for k, v in _pairs(options, "--option").items()}
    with progress() as bar:
        task = bar.add_task(f"loading {path.name} ({resolved})", total=1)
        data = load(path, resolved, columns=_pairs(mapping, "--map") or None, event=event,
                    value=value, timestamp_unit=timestamp_unit,
                    duplicates=duplicates.value, **opts)
        bar.update(task, advance=1)
    return data, resolved


# typer options shared by both commands
FormatOpt = typer.Option(DataFormat.auto, "--format", "-f", help=_FORMAT_HELP)
MapOpt = typer.Option(None, "--map", help=_MAP_HELP)
EventOpt = typer.Option(None, "--event", help="Event name for files without an event column.")
ValueOpt = typer.Option(None, "--value", help="Value for files without a value column.")
DupOpt = typer.Option(Duplicates.keep, "--duplicates",
                      help="Rows equal in every column: keep, drop, or stop with an error.")
OptionOpt = typer.Option(None, "--option", help=_OPTION_HELP)
UnitOpt = typer.Option("s", "--timestamp-unit",
                       help="Unit of integer timestamps: s, ms or us.")


@app.command()
def describe(
    path: Path = typer.Argument(..., help="Data set folder or file.", exists=True),
    format: DataFormat = FormatOpt,
    json_file: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON."),
    mapping: list[str] | None = MapOpt,
    event: str | None = EventOpt,
    value: float | None = ValueOpt,
    duplicates: Duplicates = DupOpt,
    option: list[str] | None = OptionOpt,
    timestamp_unit: str = UnitOpt,
) -> None:
    """Validate a data set and print its summary: counts, time range, events, activity.

    Example: recscope data describe ../shared/data/ml-100k --json ml100k.json
    """
    if json_file is not None:
        from recscope.cli.common import check_outputs

        check_outputs(json_file, track=False)
    data, resolved = _load(path, format, mapping, event, value, duplicates, option,
                           timestamp_unit)
    summary = data.summary()
    summary["source"] = {"path": str(path.resolve()), "format": resolved}
    summary["fingerprint"] = data.fingerprint()
    summary["side_tables"] = {
        "items": None if data.item_features is None else data.item_features.column_names,
        "users": None if data.user_features is None else data.user_features.column_names,
    }
    console.print(_summary_table(summary))
    if json_file is not None:
        write_json(json_file, summary)
        console.print(f"summary written to {json_file}")


def _summary_table(s: dict[str, Any]) -> Table:
    t = Table(title=f"{s.get('name') or 'data'} ({s['source']['format']})", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("interactions", f"{s['n_interactions']:,}")
    t.add_row("users (active / vocabulary)", f"{s['n_users']:,} / {s['n_users_vocabulary']:,}")
    t.add_row("items (active / vocabulary)", f"{s['n_items']:,} / {s['n_items_vocabulary']:,}")
    t.add_row("density", f"{s['density']:.4%}")
    t.add_row("time range (UTC)", " .. ".join(str(x) for x in s["time_range"]))
    t.add_row("events", ", ".join(f"{k}: {v:,}" for k, v in s["events"].items()))
    if "surfaces" in s:
        t.add_row("surfaces", ", ".join(f"{k}: {v:,}" for k, v in s["surfaces"].items()))
    if "value" in s:
        v = s["value"]
        t.add_row("value min / mean / max", f"{v['min']:.4g} / {v['mean']:.4g} / {v['max']:.4g}")
    for key, label in (("interactions_per_user", "per user"), ("interactions_per_item",
                                                                 "per item")):
        q = s[key]
        if q:
            t.add_row(f"interactions {label} (median / p99 / max)",
                      f"{q['median']:.0f} / {q['p99']:.0f} / {q['max']:.0f}")
    t.add_row("item popularity Gini", f"{s['item_popularity_gini']:.3f}")
    t.add_row("columns", ", ".join(s["columns"]))
    for side, cols in s["side_tables"].items():
        if cols:
            t.add_row(f"{side} side table", ", ".join(cols))
    t.add_row("fingerprint", s["fingerprint"])
    return t


@app.command()
def split(
    path: Path = typer.Argument(..., help="Data set folder or file.", exists=True),
    method: Method = typer.Option(..., "--method", "-m",
                                  help="temporal: one global time cut; leave-last: each "
                                  "user's last N items; random: a random fraction of each "
                                  "user's items; user: disjoint users."),
    out: Path = typer.Option(..., "--out", help="Output folder (written all or none): "
                             "train/, validation/ and test/ (each a data folder with "
                             "interactions.parquet and the side tables) and split.json."),
    force: bool = typer.Option(False, "--force", help="Write into an existing, non-empty "
                               "--out folder: files recscope wrote there before are "
                               "replaced, every other file is kept."),
    test_fraction: float = typer.Option(0.2, "--test-fraction",
                                        help="Test share (temporal, random, user)."),
    validation_fraction: float = typer.Option(0.0, "--validation-fraction",
                                              help="Validation share (temporal, random, user)."),
    n: int = typer.Option(1, "--n", help="leave-last: items per user held out for test."),
    validation_n: int = typer.Option(0, "--validation-n",
                                     help="leave-last: items per user for validation."),
    test_start: str | None = typer.Option(None, "--test-start",
                                          help="temporal: explicit test cut (ISO time)."),
    validation_start: str | None = typer.Option(None, "--validation-start",
                                                help="temporal: explicit validation cut."),
    drop_repeats: bool = typer.Option(False, "--drop-repeats",
                                      help="temporal: drop validation/test rows whose "
                                      "(user, item) pair is in an earlier part."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random and user splits."),
    format: DataFormat = FormatOpt,
    mapping: list[str] | None = MapOpt,
    event: str | None = EventOpt,
    value: float | None = ValueOpt,
    duplicates: Duplicates = DupOpt,
    option: list[str] | None = OptionOpt,
    timestamp_unit: str = UnitOpt,
    tracking: Tracking = None,
) -> None:
    """Split a data set into train/, validation/ and test/ data folders plus split.json.

    Each part is a data folder (interactions.parquet, the shared users.parquet and
    items.parquet vocabularies, the item and user side tables), so `recscope train --data
    OUT/train` and `--truth OUT/test/interactions.parquet` read them directly. The output
    appears only when complete; a failed run leaves nothing behind.

    Example: recscope data split ../shared/data/ml-100k --method random --test-fraction
    0.25 --out split/
    """
    from recscope.cli.common import check_outputs
    from recscope.tracking import track

    if not 0 < test_fraction < 1:
        raise ConfigError(f"must be in (0, 1), got {test_fraction}", key="--test-fraction")
    if not 0 <= validation_fraction < 1 or test_fraction + validation_fraction >= 1:
        raise ConfigError(f"must be in [0, 1) with --test-fraction + --validation-fraction "
                          f"< 1, got {validation_fraction}", key="--validation-fraction")
    if n < 1:
        raise ConfigError(f"must be >= 1, got {n}", key="--n")
    if validation_n < 0:
        raise ConfigError(f"must be >= 0, got {validation_n}", key="--validation-n")
    if seed < 0:
        raise ConfigError(f"must be >= 0, got {seed}", key="--seed")
    check_outputs(folder=out, force=force, tracking=tracking)
    data, resolved = _load(path, format, mapping, event, value, duplicates, option,
                           timestamp_unit)
    params: dict[str, Any] = {"method": method.value}
    if method in (Method.random, Method.user):
        params["seed"] = seed
    if method is Method.leave_last:
        params.update(n=n, validation_n=validation_n)
    elif method is Method.temporal and test_start is not None:
        params.update(test_start=test_start, validation_start=validation_start)
    else:
        params.update(test_fraction=test_fraction, validation_fraction=validation_fraction)
    if method is Method.temporal:
        params["drop_repeats"] = drop_repeats
    with progress() as bar:
        task = bar.add_task(f"{method.value} split", total=1)
        parts = _split(data, method, test_fraction, validation_fraction, n, validation_n,
                       test_start, validation_start, seed, drop_repeats)
        bar.update(task, advance=1)
        info = {"source": {"path": str(path.resolve()), "format": resolved},
                "fingerprint": data.fingerprint(), "params": params,
                "parts": parts.summary(), "leakage": leakage(parts),
                "time_ranges": {name: _time_range(part) for name, part in _named(parts)}}
        write = bar.add_task("writing parts", total=1)
        parts.save(out, force=force, info=info)
        bar.update(write, advance=1)
    loading = {"duplicates": duplicates.value, "map": _pairs(mapping, "--map"),
               "event": event, "value": value, "options": _pairs(option, "--option"),
               "timestamp_unit": timestamp_unit}
    with track("data split", config={**params, "source": info["source"], "load": loading},
               inputs={"data": info["fingerprint"]}, store=tracking) as run:
        run.log_metrics({f"{name}.{k}": float(v) for name, d in info["parts"].items()
                         for k, v in d.items()})
        run.log_artifact(out / "split.json")
        run.set_tags({"recscope.output": str(out.resolve())})
    console.print(_split_table(info, out))


def _named(parts: Split) -> list[tuple[str, Interactions]]:
    return [("train", parts.train), ("validation", parts.validation), ("test", parts.test)]


def _time_range(part: Interactions) -> list[str | None]:
    """[first, last] timestamp of a part in ISO-8601 UTC ([None, None] when empty)."""
    if not len(part):
        return [None, None]
    col = part.table.column("timestamp")
    return [pc.min(col).as_py().isoformat(), pc.max(col).as_py().isoformat()]


def leakage(parts: Split) -> dict[str, int]:
    """(user, item) pairs found in two parts, and users shared by train and test."""
    def pairs(p: Interactions) -> np.ndarray:
        return np.unique(p.user_index.astype(np.int64) * p.n_items + p.item_index)

    def shared(a: np.ndarray, b: np.ndarray) -> int:
        return int(np.intersect1d(a, b, assume_unique=True).size)

    tr, va, te = (pairs(p) for _, p in _named(parts))
    return {"pairs_train_test": shared(tr, te), "pairs_train_validation": shared(tr, va),
            "pairs_validation_test": shared(va, te),
            "users_train_test": shared(np.unique(parts.train.user_index),
                                       np.unique(parts.test.user_index))}


def _split(data: Interactions, method: Method, test_fraction: float,
           validation_fraction: float, n: int, validation_n: int, test_start: str | None,
           validation_start: str | None, seed: int, drop_repeats: bool = False) -> Split:
    if method in (Method.temporal, Method.leave_last) and len(data):
        ts = data.timestamps
        if ts.min() == ts.max():
            raise ConfigError(f"the data has no time information (every timestamp is "
                              f"equal), so a {method.value} split is meaningless; use "
                              "--method random or user", key="--method")
    try:
        if method is Method.temporal:
            if test_start is not None:
                return temporal_split(data, test_start, validation_start,
                                      drop_repeats=drop_repeats)
            return temporal_split_fraction(data, test_fraction, validation_fraction,
                                           drop_repeats=drop_repeats)
        if method is Method.leave_last:
            return leave_last_n(data, n, validation_n)
        if method is Method.random:
            return random_holdout(data, test_fraction, validation_fraction, seed=seed)
        return user_split(data, test_fraction, validation_fraction, seed=seed)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        key = "--n" if method is Method.leave_last else (
            "--test-start" if test_start is not None else "--test-fraction")
        raise ConfigError(str(exc), key=key) from exc


def _split_table(info: dict[str, Any], out: Path) -> Table:
    t = Table(title=f"{info['params']['method']} split -> {out}")
    for col in ("part", "interactions", "users", "items", "time range (UTC)"):
        t.add_column(col)
    for name, d in info["parts"].items():
        tr = info["time_ranges"][name]
        t.add_row(name, f"{d['n_interactions']:,}", f"{d['n_users']:,}", f"{d['n_items']:,}",
                  " .. ".join(str(x) for x in tr) if tr[0] else "-")
    leak = info["leakage"]
    t.caption = (f"pairs in train and test: {leak['pairs_train_test']}, users in train and "
                 f"test: {leak['users_train_test']}")
    return t
