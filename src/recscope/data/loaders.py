"""Loaders for the public data sets recscope is tested on; each reads a LOCAL path.

Every loader returns :class:`~recscope.data.Interactions` in the canonical schema, with
item and user side tables where the data set has them. Nothing is downloaded: point a
loader at the folder (or file) you already have. :func:`load` recognises the format of a
path by itself. The mapping decisions of each loader are documented in ``docs/data.md``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from recscope.data.interactions import Interactions
from recscope.data.readers import _first_line, check_file, read_interactions
from recscope.data.schema import TIMESTAMP_TYPE
from recscope.data.splits import Split
from recscope.data.validate import DuplicatePolicy, parse_timestamps
from recscope.errors import ConfigError, DataValidationError
from recscope.io import did_you_mean

#: Names accepted by :func:`load` (``auto`` detects one of the others).
FORMATS: tuple[str, ...] = (
    "auto", "movielens", "obd", "coat", "amazon", "mind", "lastfm", "csv", "parquet",
    "recscope", "split",
)
#: JSON files recscope writes into its own folders (never Amazon reviews).
_OWN_JSON = ("split.json", "meta.json", ".recscope-manifest.json", "summary.json")
Format = Literal["auto", "movielens", "obd", "coat", "amazon", "mind", "lastfm", "csv",
                 "parquet", "recscope"]

#: ML-100K's own split files (u1.base .. u5.test, ua/ub), same layout as u.data.
_ML100K_SPLIT_FILE = re.compile(r"u[1-5ab]\.(base|test)")

#: Timestamp given to rows of data sets that record no time (Coat, Last.fm).
NO_TIME = 0


# ---------------------------------------------------------------------- helpers
def _constant(value: str, n: int) -> pa.Array:
    """A string column of one repeated value (dictionary-encoded: cheap for big logs)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                          pa.array([value], pa.string()))


def _epoch(n: int, seconds: int = NO_TIME) -> pa.Array:
    return pa.array(np.full(n, seconds * 1_000_000, dtype=np.int64)).cast(TIMESTAMP_TYPE)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataValidationError(f"{what} not found{did_you_mean(path)}", file=str(path))
    return check_file(path)


def _read_text_table(path: Path, names: list[str] | None = None, *, delimiter: str = "\t",
                     quote: bool = True, encoding: str = "utf8",
                     column_types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """Delimited text through Arrow, errors re-raised naming the file."""
    read = pacsv.ReadOptions(column_names=names, encoding=encoding) if names else \
        pacsv.ReadOptions(encoding=encoding)
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quote else False)
    convert = pacsv.ConvertOptions(strings_can_be_null=True,
                                   column_types=dict(column_types or {}))
    try:
        return pacsv.read_csv(path, read_options=read, parse_options=parse,
                              convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataValidationError(f"cannot parse as delimited text: {_first_line(exc)}",
                                  file=str(path)) from None


def _need_columns(table: pa.Table, columns: list[str], file: Path) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataValidationError(f"missing required column(s) {missing}; found "
                                  f"{table.column_names}", file=str(file), column=missing[0])


def _one_file(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise DataValidationError(f"no {what} file (looked for {list(names)})", file=str(folder))


# ---------------------------------------------------------------------- Coat
def load_coat(path: str | Path, part: Literal["train", "test"] = "train", *,
              duplicates: DuplicatePolicy = "keep") -> Interactions:
    """Coat (Schnabel et al. 2016): ``part="train"`` (self-selected ratings, 6,960) or
    ``"test"`` (ratings of uniformly random items, 4,640).

    Each non-zero cell of ``<part>.ascii`` (290 users × 300 items) is a ``rating`` row
    with the cell as ``value`` and ``propensity`` taken from ``propensities.ascii`` at the
    same (user, item). Coat has no times: every row is stamped 1970-01-01 UTC. User and
    item features (``user_item_features/``) are decoded from one-hot to named columns.
    Both parts share the full 290-user / 300-item vocabularies.
    """
    if part not in ("train", "test"):
        raise ConfigError(f"part must be 'train' or 'test', not {part!r}", key="part")
    root = Path(path)
    if root.is_file():
        root = root.parent
    ratings_file = _require(root / f"{part}.ascii", f"Coat {part} matrix")
    ratings = _read_matrix(ratings_file)
    prop_file = _require(root / "propensities.ascii", "Coat propensity matrix")
    prop = _read_matrix(prop_file)
    if prop.shape != ratings.shape:
        raise DataValidationError(f"propensity matrix is {prop.shape} but ratings are "
                                  f"{ratings.shape}", file=str(prop_file))
    users, items = np.nonzero(ratings)  # row-major: by user, then item
    table = pa.table({
        "user_id": pa.array(users.astype(np.int64)),
        "item_id": pa.array(items.astype(np.int64)),
        "timestamp": _epoch(len(users)),
        "event": _constant("rating", len(users)),
        "value": pa.array(ratings[users, items].astype(np.float64)),
        "propensity": pa.array(prop[users, items].astype(np.float64)),
    })
    feats = root / "user_item_features"
    user_features = item_features = None
    if (feats / "user_features.ascii").exists():
        user_features = _coat_features(feats / "user_features.ascii",
                                       feats / "user_features_map.txt", "user_id")
    if (feats / "item_features.ascii").exists():
        item_features = _coat_features(feats / "item_features.ascii",
                                       feats / "item_features_map.txt", "item_id")
        item_features = _coat_item_text(item_features)
    if user_features is None:
        user_features = pa.table({"user_id": pa.array(np.arange(ratings.shape[0],
                                                                dtype=np.int64))})
    if item_features is None:
        item_features = pa.table({"item_id": pa.array(np.arange(ratings.shape[1],
                                                                dtype=np.int64))})
    return Interactions.from_table(table, file=str(ratings_file), duplicates=duplicates,
                                   item_features=item_features, user_features=user_features,
                                   name=f"coat-{part}")


def _read_matrix(path: Path) -> np.ndarray:
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataValidationError(f"not a whitespace-separated numeric matrix: {exc}",
                                  file=str(path)) from exc
    bad = np.argwhere(~np.isfinite(m) | (m < 0))
    if bad.size:
        r, c = bad[0]
        raise DataValidationError(f"negative or non-finite value {m[r, c]} in column {c}",
                                  file=str(path), row=int(r))
    return m


def _coat_features(matrix: Path, mapping: Path, key: str) -> pa.Table:
    """One-hot feature matrix + ``group:value`` names -> one text column per group."""
    m = _read_matrix(matrix)
    names = _require(mapping, "Coat feature map").read_text(encoding="utf-8").split("\n")
    names = [n.strip() for n in names if n.strip()]
    if len(names) != m.shape[1]:
        raise DataValidationError(f"{len(names)} feature names for {m.shape[1]} columns",
                                  file=str(mapping))
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        groups.setdefault(name.split(":", 1)[0], []).append(j)
    cols: dict[str, pa.Array] = {key: pa.array(np.arange(m.shape[0], dtype=np.int64))}
    for group, idx in groups.items():
        block = m[:, idx]
        labels = np.array([names[j].split(":", 1)[1] for j in idx], dtype=object)
        hot = block.sum(axis=1)
        values = np.where(hot > 0, labels[block.argmax(axis=1)], None)
        cols[group] = pa.array(values.tolist(), pa.string())
    return pa.table(cols)


def _coat_item_text(items: pa.Table) -> pa.Table:
    """Coat items are jackets: topic = jacket type, text = 'gender type jacket, color'."""
    names = items.column_names
    if not {"gender", "jackettype", "color"} <= set(names):
        return items
    df = items.to_pandas()
    text = (df["gender"].fillna("") + "'s " + df["jackettype"].fillna("") + " jacket, "
            + df["color"].fillna(""))
    out = items.append_column("text", pa.array(text.tolist(), pa.string()))
    return out.append_column("topic", items.column("jackettype"))


# ---------------------------------------------------------------------- MovieLens
_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
                  "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
                  "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def load_movielens(path: str | Path, *, duplicates: DuplicatePolicy = "keep") -> Interactions:
    """MovieLens: the 100K folder (``u.data``, ``u.item``, ``u.user``) or one of its
    files (``u.data``, ``u1.base`` .. ``ub.test``: side tables from the same folder, so
    the splits share the full vocabularies), or the CSV family (``ratings.csv``,
    ``movies.csv`` of ml-latest-small / 20M / 25M / 32M).

    Rows are ``rating`` events with the rating as ``value`` and epoch-second times.
    Items: ``text`` = title, ``topic`` = first listed genre, ``genres`` = all genres.
    Users (100K only): age, gender, occupation, zip code.
    """
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if (p.is_file() and p.name == "ratings.csv") or (p.is_dir() and (p / "ratings.csv").exists()
                                                  and not (p / "u.data").exists()):
        return _load_movielens_csv(folder, duplicates)
    data_file = p if p.is_file() else _one_file(folder, ("u.data",), "MovieLens u.data")
    raw = _read_text_table(data_file, ["user_id", "item_id", "value", "timestamp"],
                           column_types={"user_id": pa.int64(), "item_id": pa.int64(),
                                         "value": pa.float64(), "timestamp": pa.int64()})
    table = pa.table({
        "user_id": raw.column("user_id"), "item_id": raw.column("item_id"),
        "timestamp": parse_timestamps(raw.column("timestamp"), file=str(data_file)),
        "event": _constant("rating", raw.num_rows), "value": raw.column("value"),
    })
    items = _ml100k_items(folder / "u.item") if (folder / "u.item").exists() else None
    users = _ml100k_users(folder / "u.user") if (folder / "u.user").exists() else None
    name = "movielens-100k" if data_file.name == "u.data" else \
        f"movielens-100k-{data_file.name}"
    return Interactions.from_table(table, file=str(data_file), duplicates=duplicates,
                                   item_features=items, user_features=users, name=name)


def _ml100k_items(path: Path) -> pa.Table:
    names = ["item_id", "title", "release_date", "video_release_date", "imdb_url",
             *(f"g{i}" for i in range(len(_ML100K_GENRES)))]
    df = pd.read_csv(path, sep="|", header=None, names=names, encoding="latin-1",
                     dtype={"imdb_url": "string", "title": "string"})
    flags = df[[f"g{i}" for i in range(len(_ML100K_GENRES))]].to_numpy(dtype=bool)
    _, cols = np.nonzero(flags)  # row-major: genres of each movie in u.genre order
    offsets = np.r_[0, np.cumsum(flags.sum(axis=1))].astype(np.int32)
    genre_names = pa.array(_ML100K_GENRES, pa.string())
    genres = pa.ListArray.from_arrays(pa.array(offsets), genre_names.take(pa.array(cols)))
    # primary genre: the first listed one other than "unknown" (unknown only when alone)
    known = flags[:, 1:]
    first = np.where(known.any(axis=1), known.argmax(axis=1) + 1, 0)
    topic = pc.if_else(pa.array(flags.any(axis=1)), genre_names.take(pa.array(first)),
                       pa.nulls(len(df), pa.string()))
    released = pd.to_datetime(df["release_date"], format="%d-%b-%Y", errors="coerce")
    return pa.table({
        "item_id": pa.array(df["item_id"].to_numpy(np.int64)),
        "text": pa.array(df["title"], pa.string(), from_pandas=True),
        "topic": topic,
        "genres": genres,
        "release_date": pa.array(released.to_numpy().astype("datetime64[D]"),
                                 from_pandas=True).cast(pa.date32()),
        "imdb_url": pa.array(df["imdb_url"], pa.string(), from_pandas=True),
    })


def _primary_genre(genres: list[str]) -> str | None:
    known = [g for g in genres if g not in ("unknown", "(no genres listed)")]
    return known[0] if known else (genres[0] if genres else None)


def _ml100k_users(path: Path) -> pa.Table:
    return _read_text_table(path, ["user_id", "age", "gender", "occupation", "zip_code"],
                            delimiter="|", column_types={"user_id": pa.int64(),
                                                         "age": pa.int32(),
                                                         "zip_code": pa.string()})


def _load_movielens_csv(folder: Path, duplicates: DuplicatePolicy) -> Interactions:
    ratings = folder / "ratings.csv"
    raw = _read_text_table(ratings, delimiter=",",
                           column_types={"userId": pa.int64(), "movieId": pa.int64(),
                                         "rating": pa.float64(), "timestamp": pa.int64()})
    _need_columns(raw, ["userId", "movieId", "rating", "timestamp"], ratings)
    table = pa.table({
        "user_id": raw.column("userId"), "item_id": raw.column("movieId"),
        "timestamp": parse_timestamps(raw.column("timestamp"), file=str(ratings)),
        "event": _constant("rating", raw.num_rows), "value": raw.column("rating"),
    })
    items = None
    if (folder / "movies.csv").exists():
        movies = _read_text_table(folder / "movies.csv", delimiter=",",
                                  column_types={"movieId": pa.int64(), "title": pa.string(),
                                                "genres": pa.string()})
        _need_columns(movies, ["movieId", "title", "genres"], folder / "movies.csv")
        genres = [g.split("|") if g else [] for g in movies.column("genres").to_pylist()]
        items = pa.table({
            "item_id": movies.column("movieId"),
            "text": movies.column("title"),
            "topic": pa.array([_primary_genre(g) for g in genres], pa.string()),
            "genres": pa.array(genres, pa.list_(pa.string())),
        })
    return Interactions.from_table(table, file=str(ratings), duplicates=duplicates,
                                   item_features=items, name=f"movielens-{folder.name}")


# ---------------------------------------------------------------------- Open Bandit
_OBD_POLICIES = ("random", "bts")
_OBD_CAMPAIGNS = ("all", "men", "women")


def load_obd(path: str | Path, *, policy: str = "random", campaign: str = "all",
             affinities: bool = True, duplicates: DuplicatePolicy = "keep") -> Interactions:
    """Open Bandit Dataset: one ``impression`` row per logged (slot, item) record.

    ``value`` is the click (0/1), so the click rate is the mean value and an off-policy
    reward is the row's value; ``position`` is the slot made 0-based (file 1-3 -> 0-2);
    ``propensity`` is the logging policy's ``propensity_score``; ``surface`` is the
    campaign (all/men/women) and ``policy`` the behaviour policy (random/bts). OBD has
    no user ids: ``user_id`` names the user-feature context (the four hashed user
    features), whose values are the user side table. ``affinity_<k>`` columns carry the
    per-row user-item affinities (``affinities=False`` drops them); ``impression_id`` is
    the file's row id. Item context (price and hashed categories) is the item side table.

    ``path`` is a campaign folder (``obd/random/all``), its CSV, or the ``obd`` root (then
    ``policy`` and ``campaign`` choose the folder).
    """
    p = Path(path)
    if p.is_dir() and not (p / "item_context.csv").exists():
        for key, val, known in (("policy", policy, _OBD_POLICIES),
                                ("campaign", campaign, _OBD_CAMPAIGNS)):
            if val not in known:
                raise ConfigError(f"unknown OBD {key} {val!r}; expected one of {list(known)}",
                                  key=key)
        p = p / policy / campaign if (p / policy).is_dir() else p / campaign
    if p.is_dir():
        csvs = sorted(f for f in p.glob("*.csv") if f.name != "item_context.csv")
        if len(csvs) != 1:
            raise DataValidationError("expected one log CSV beside item_context.csv, found "
                                      f"{[f.name for f in csvs]}", file=str(p))
        log_file = csvs[0]
    else:
        log_file = _require(p, "OBD log")
    folder = log_file.parent
    policy_name = folder.parent.name if folder.parent.name in _OBD_POLICIES else policy
    raw = _read_text_table(log_file, delimiter=",",
                           column_types={"item_id": pa.int64(), "position": pa.int64(),
                                         "click": pa.float64()})
    _need_columns(raw, ["timestamp", "item_id", "position", "click", "propensity_score"],
                  log_file)
    n = raw.num_rows
    pos = raw.column("position")
    bad = pc.less(pos, 1)
    if pc.any(bad).as_py():
        row = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        raise DataValidationError(f"OBD positions are 1-based; found {pos[row].as_py()}",
                                  file=str(log_file), column="position", row=row,
                                  line=row + 2)
    ufeat = sorted(c for c in raw.column_names if c.startswith("user_feature_"))
    user_id, user_table = _obd_users(raw, ufeat, log_file)
    cols: dict[str, Any] = {
        "user_id": user_id,
        "item_id": raw.column("item_id"),
        "timestamp": raw.column("timestamp"),
        "event": _constant("impression", n),
        "value": raw.column("click"),
        "surface": _constant(log_file.stem, n),
        "position": pc.subtract(pos, 1),
        "propensity": raw.column("propensity_score"),
        "policy": _constant(policy_name, n),
    }
    if "" in raw.column_names:
        cols["impression_id"] = raw.column("")
    if affinities:
        for c in raw.column_names:
            if c.startswith("user-item_affinity_"):
                cols["affinity_" + c.removeprefix("user-item_affinity_")] = raw.column(c)
    items = None
    if (folder / "item_context.csv").exists():
        ctx = _read_text_table(folder / "item_context.csv", delimiter=",",
                               column_types={"item_id": pa.int64()})
        items = ctx.drop_columns([c for c in ctx.column_names if c == ""])
    return Interactions.from_table(pa.table(cols), file=str(log_file), duplicates=duplicates,
                                   item_features=items, user_features=user_table,
                                   name=f"obd-{policy_name}-{log_file.stem}")


def _obd_users(raw: pa.Table, ufeat: list[str], file: Path) -> tuple[pa.Array, pa.Table]:
    """Context id = first 8 hex digits of each hashed user feature, joined by '-'."""
    if not ufeat:
        raise DataValidationError("no user_feature_<k> columns", file=str(file),
                                  column="user_feature_0")
    df = raw.select(ufeat).to_pandas().astype("string")
    first_null = df.isna().any(axis=1).to_numpy()
    if first_null.any():
        row = int(np.flatnonzero(first_null)[0])
        col = ufeat[int(np.flatnonzero(df.iloc[row].isna().to_numpy())[0])]
        raise DataValidationError("missing user feature", file=str(file), column=col, row=row,
                                  line=row + 2)
    key = df[ufeat[0]].str[:8]
    for c in ufeat[1:]:
        key = key + "-" + df[c].str[:8]
    users = df.assign(user_id=key).drop_duplicates()
    if users["user_id"].duplicated().any():  # pragma: no cover - would need a hash clash
        raise DataValidationError("user-feature contexts collide on their short id",
                                  file=str(file), column="user_id")
    users = users.sort_values("user_id")[["user_id", *ufeat]]
    return pa.array(key.tolist(), pa.string()), pa.Table.from_pandas(users,
                                                                     preserve_index=False)


# ---------------------------------------------------------------------- Amazon reviews
def load_amazon(path: str | Path, *, duplicates: DuplicatePolicy = "keep") -> Interactions:
    """Amazon reviews (McAuley's JSON lines, e.g. Musical Instruments 5-core).

    One ``review`` row per review: ``value`` = star rating (``overall``), ``timestamp`` =
    ``unixReviewTime``, with ``review_text``, ``review_summary``, ``helpful_votes`` and
    ``total_votes`` columns. The 5-core files carry no product metadata, so the item side
    table holds each item's first review time (when it became visible in the data); the
    user side table holds the reviewer name.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted([*p.glob("*.json"), *p.glob("*.jsonl"), *p.glob("*.json.gz")])
        if len(files) != 1:
            raise DataValidationError(f"expected one reviews JSON file, found "
                                      f"{[f.name for f in files]}", file=str(p))
        p = files[0]
    _require(p, "Amazon reviews file")
    known = pa.schema([("reviewerID", pa.string()), ("asin", pa.string()),
                       ("reviewerName", pa.string()), ("reviewText", pa.string()),
                       ("summary", pa.string()), ("overall", pa.float64()),
                       ("unixReviewTime", pa.int64())])
    try:  # fixed types for the fields used: type inference per block breaks on late nulls
        raw = pajson.read_json(p, parse_options=pajson.ParseOptions(
            explicit_schema=known, unexpected_field_behavior="infer"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataValidationError(f"not JSON lines: {_first_line(exc)}", file=str(p)) from None
    _need_columns(raw, ["reviewerID", "asin", "overall", "unixReviewTime"], p)
    n = raw.num_rows
    cols: dict[str, Any] = {
        "user_id": raw.column("reviewerID"),
        "item_id": raw.column("asin"),
        "timestamp": raw.column("unixReviewTime"),
        "event": _constant("review", n),
        "value": raw.column("overall"),
    }
    if "reviewText" in raw.column_names:
        cols["review_text"] = raw.column("reviewText")
    if "summary" in raw.column_names:
        cols["review_summary"] = raw.column("summary")
    if "helpful" in raw.column_names and pa.types.is_list(raw.column("helpful").type):
        helpful = raw.column("helpful")
        cols["helpful_votes"] = pc.list_element(helpful, 0)
        cols["total_votes"] = pc.list_element(helpful, 1)
    table = pa.table(cols)
    if not pa.types.is_integer(table.column("timestamp").type):
        raise DataValidationError(f"wrong type {table.column('timestamp').type} (expected "
                                  "epoch seconds)", file=str(p), column="unixReviewTime")
    table = table.set_column(2, "timestamp", parse_timestamps(table.column("timestamp"),
                                                              file=str(p)))
    items = table.group_by("item_id").aggregate([("timestamp", "min")]).rename_columns(
        ["item_id", "first_review_time"]).sort_by("item_id")
    users = None
    if "reviewerName" in raw.column_names:
        named = pa.table({"user_id": raw.column("reviewerID"),
                          "name": raw.column("reviewerName")}).filter(
            pc.is_valid(raw.column("reviewerName")))
        users = named.group_by("user_id", use_threads=False).aggregate(
            [("name", "first")]).rename_columns(["user_id", "name"]).sort_by("user_id")
    return Interactions.from_table(table, file=str(p), duplicates=duplicates,
                                   item_features=items, user_features=users,
                                   name=f"amazon-{p.name.split('.')[0]}")


# ---------------------------------------------------------------------- MIND
_MIND_BEHAVIORS = ["impression_id", "user_id", "time", "history", "impressions"]
_MIND_NEWS = ["item_id", "category", "subcategory", "title", "abstract", "url",
              "title_entities", "abstract_entities"]


def load_mind(path: str | Path, *, history: bool = True,
              duplicates: DuplicatePolicy = "keep") -> Interactions:
    """MIND news: each impression log expands to one ``impression`` row per shown news
    with ``value`` = click (0/1) and ``impression_id`` from the log; ``list_index``
    is the news' place in the impression list (MIND does not say it is a screen
    position, so it is not put in ``position``).

    ``history=True`` adds one ``click`` row (value 1) per distinct (user, news) in the
    users' click histories. Those clicks happened before the log window at unknown
    times, so they are stamped one second before the first impression of the file: a
    temporal split keeps them in training. Times in behaviors.tsv are read as UTC.
    ``news.tsv`` gives the item side table: ``text`` = title + abstract, ``topic`` =
    category, plus subcategory, title, abstract and url.
    """
    p = Path(path)
    folder = p.parent if p.is_file() else p
    beh_file = p if p.is_file() else _one_file(folder, ("behaviors.tsv",), "MIND behaviors")
    beh = _read_text_table(beh_file, _MIND_BEHAVIORS, quote=False,
                           column_types={"impression_id": pa.int64(), "user_id": pa.string(),
                                         "time": pa.string(), "history": pa.string(),
                                         "impressions": pa.string()})
    times = pd.to_datetime(beh.column("time").to_pandas(), format="%m/%d/%Y %I:%M:%S %p",
                           errors="coerce", utc=True)
    bad = times.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataValidationError(f"unparsable time {beh.column('time')[row].as_py()!r} "
                                  "(expected M/D/YYYY h:mm:ss AM)", file=str(beh_file),
                                  column="time", row=row, line=row + 1)
    micros = times.dt.tz_convert(None).to_numpy().astype("datetime64[us]").view(np.int64)
    ts = pa.array(micros).cast(TIMESTAMP_TYPE)
    # expand "N1-0 N2-1 ..." to one row per token
    tokens = pc.split_pattern(pc.utf8_trim_whitespace(pc.fill_null(beh.column("impressions"),
                                                                   "")), " ")
    parent = pc.list_parent_indices(tokens).to_numpy()
    flat = pc.list_flatten(tokens)
    offsets = tokens.combine_chunks().offsets.to_numpy() if isinstance(
        tokens, pa.ChunkedArray) else tokens.offsets.to_numpy()
    list_index = np.arange(len(flat)) - offsets[parent]
    parts = pc.split_pattern(flat, "-", max_splits=1, reverse=True)
    okn = pc.equal(pc.list_value_length(parts), 2).to_numpy(zero_copy_only=False)
    label = pa.array([], pa.string())
    if okn.all() and len(flat):
        label = pc.list_element(parts, 1)
        okn = pc.is_in(label, value_set=pa.array(["0", "1"])).to_numpy(zero_copy_only=False)
    if not okn.all():
        row = int(parent[np.flatnonzero(~okn)[0]])
        raise DataValidationError(f"impression {flat[int(np.flatnonzero(~okn)[0])].as_py()!r}"
                                  " is not NEWSID-0 or NEWSID-1 (unlabelled MIND test logs "
                                  "cannot be loaded)", file=str(beh_file),
                                  column="impressions", row=row, line=row + 1)
    user_col = beh.column("user_id").combine_chunks()
    imp = pa.table({
        "user_id": user_col.take(pa.array(parent)),
        "item_id": pc.list_element(parts, 0),
        "timestamp": ts.take(pa.array(parent)),
        "event": _constant("impression", len(flat)),
        "value": pc.cast(label, pa.float64()),
        "impression_id": beh.column("impression_id").combine_chunks().take(pa.array(parent)),
        "list_index": pa.array(list_index.astype(np.int32)),
    })
    tables = [imp]
    if history:
        hist = pc.split_pattern(pc.utf8_trim_whitespace(pc.fill_null(beh.column("history"),
                                                                     "")), " ")
        hp = pc.list_parent_indices(hist).to_numpy()
        hitems = pc.list_flatten(hist)
        keep = pc.not_equal(hitems, "").to_numpy(zero_copy_only=False)
        pairs = pd.DataFrame({"user_id": user_col.take(pa.array(hp[keep])).to_pandas(),
                              "item_id": hitems.filter(pa.array(keep)).to_pandas()})
        pairs = pairs.drop_duplicates().sort_values(["user_id", "item_id"], kind="stable")
        m = len(pairs)
        first = int(pc.min(ts).cast(pa.int64()).as_py() or 0) - 1_000_000 if len(ts) else 0
        tables.append(pa.table({
            "user_id": pa.array(pairs["user_id"].tolist(), pa.string()),
            "item_id": pa.array(pairs["item_id"].tolist(), pa.string()),
            "timestamp": pa.array(np.full(m, first, np.int64)).cast(TIMESTAMP_TYPE),
            "event": _constant("click", m),
            "value": pa.array(np.ones(m)),
            "impression_id": pa.nulls(m, pa.int64()),
            "list_index": pa.nulls(m, pa.int32()),
        }))
    table = pa.concat_tables([t.cast(tables[0].schema) for t in tables]) if len(tables) > 1 \
        else tables[0]
    items = None
    if (folder / "news.tsv").exists():
        news = _read_text_table(folder / "news.tsv", _MIND_NEWS, quote=False,
                                column_types=dict.fromkeys(_MIND_NEWS, pa.string()))
        title, abstract = news.column("title"), news.column("abstract")
        text = pc.if_else(pc.is_valid(abstract),
                          pc.binary_join_element_wise(pc.fill_null(title, ""), abstract, ". "),
                          title)
        items = pa.table({"item_id": news.column("item_id"), "text": text,
                          "topic": news.column("category"),
                          "subcategory": news.column("subcategory"), "title": title,
                          "abstract": abstract, "url": news.column("url")})
    return Interactions.from_table(table, file=str(beh_file), duplicates=duplicates,
                                   item_features=items, name="mind")


# ---------------------------------------------------------------------- Last.fm
def load_lastfm(path: str | Path, *, duplicates: DuplicatePolicy = "keep") -> Interactions:
    """HetRec Last.fm ``user_artists.dat``: one ``play`` row per (user, artist), ``value``
    = play count (``weight``). The file has no times, so rows are stamped 1970-01-01 UTC.

    Item side table: artist name as ``text`` when ``artists.dat`` is present, and the
    knowledge-graph ``entity_id`` when ``item_index2entity_id.txt`` (MKR) is present.
    """
    p = Path(path)
    folder = p.parent if p.is_file() else p
    data_file = p if p.is_file() else _one_file(folder, ("user_artists.dat",),
                                                "Last.fm user_artists.dat")
    raw = _read_text_table(data_file, quote=False,
                           column_types={"userID": pa.int64(), "artistID": pa.int64(),
                                         "weight": pa.float64()})
    _need_columns(raw, ["userID", "artistID", "weight"], data_file)
    n = raw.num_rows
    table = pa.table({"user_id": raw.column("userID"), "item_id": raw.column("artistID"),
                      "timestamp": _epoch(n), "event": _constant("play", n),
                      "value": raw.column("weight")})
    items: pa.Table | None = None
    if (folder / "artists.dat").exists():
        art = _read_text_table(folder / "artists.dat", quote=False,
                               column_types={"id": pa.int64(), "name": pa.string()})
        _need_columns(art, ["id", "name"], folder / "artists.dat")
        items = pa.table({"item_id": art.column("id"), "text": art.column("name")})
    if (folder / "item_index2entity_id.txt").exists():
        ent = _read_text_table(folder / "item_index2entity_id.txt", ["item_id", "entity_id"],
                               quote=False, column_types={"item_id": pa.int64(),
                                                          "entity_id": pa.int64()})
        items = ent if items is None else items.join(ent, "item_id", join_type="full outer")
        items = items.sort_by("item_id")
    return Interactions.from_table(table, file=str(data_file), duplicates=duplicates,
                                   item_features=items, name="lastfm")


# ---------------------------------------------------------------------- dispatcher
LOADERS: dict[str, Callable[..., Interactions]] = {
    "movielens": load_movielens,
    "obd": load_obd,
    "coat": load_coat,
    "amazon": load_amazon,
    "mind": load_mind,
    "lastfm": load_lastfm,
}


def detect_format(path: str | Path) -> str:
    """Recognise a data set folder or file; raises listing the formats when unsure."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"path not found{did_you_mean(p)}", file=str(p))
    if p.is_dir():
        if p.suffix.lower() in (".parquet", ".pq", ".csv", ".tsv", ".tab", ".txt", ".json",
                                ".jsonl"):
            raise DataValidationError("is a folder; expected a file", file=str(p))
        if (p / "interactions.parquet").exists():
            return "recscope"
        if (p / "split.json").exists():
            return "split"
        if (p / "u.data").exists() or (p / "ratings.csv").exists():
            return "movielens"
        if (p / "train.ascii").exists() and (p / "propensities.ascii").exists():
            return "coat"
        if (p / "behaviors.tsv").exists():
            return "mind"
        if (p / "user_artists.dat").exists():
            return "lastfm"
        if (p / "item_context.csv").exists() or any(
                (p / pol).is_dir() for pol in _OBD_POLICIES):
            return "obd"
        if [f for f in (*p.glob("*.json"), *p.glob("*.jsonl"), *p.glob("*.json.gz"))
                if f.name not in _OWN_JSON]:
            return "amazon"
    else:
        name, suffix = p.name.lower(), p.suffix.lower()
        if name in ("u.data", "ratings.csv") or _ML100K_SPLIT_FILE.fullmatch(name):
            return "movielens"
        if name in ("train.ascii", "test.ascii"):
            return "coat"
        if name == "behaviors.tsv":
            return "mind"
        if name == "user_artists.dat":
            return "lastfm"
        if name.endswith((".json", ".jsonl", ".json.gz")) and name not in _OWN_JSON:
            return "amazon"
        if suffix in (".parquet", ".pq"):
            return "parquet"
        if suffix in (".csv", ".tsv", ".tab", ".txt"):
            if suffix == ".csv" and (p.parent / "item_context.csv").exists() and \
                    name != "item_context.csv":
                return "obd"
            return "csv"
    raise DataValidationError(
        "cannot tell the data format; name it (format= or --format) as one of "
        f"{[f for f in FORMATS if f != 'auto']}", file=str(p))


def load(path: str | Path, format: str = "auto", *,
         columns: Mapping[str, str] | None = None, event: str | None = None,
         value: float | None = None, timestamp_unit: str = "s",
         duplicates: DuplicatePolicy = "keep", **options: Any) -> Interactions:
    """Load any supported data set, file or saved directory as :class:`Interactions`.

    ``format`` is one of :data:`FORMATS`. ``columns``/``event``/``value``/
    ``timestamp_unit`` apply to plain ``csv``/``parquet`` files (see
    :func:`~recscope.data.read_interactions`); ``options`` go to the data set's loader
    (``part`` for Coat, ``policy``/``campaign``/``affinities`` for OBD, ``history`` for
    MIND). ``duplicates`` (keep, drop, error) applies to every format.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected one of {list(FORMATS)}",
                          key="format")
    fmt = detect_format(path) if format == "auto" else format
    plain = fmt in ("csv", "parquet")
    if not plain and (columns or event is not None or value is not None):
        raise ConfigError(f"column mapping and event/value defaults apply to csv/parquet "
                          f"files, not to format {fmt!r}", key="columns")
    if fmt in ("recscope", "split"):
        _no_options(options, fmt, ())
        data = Interactions.load(path) if fmt == "recscope" else load_split(path).train
        return data if duplicates == "keep" else _dedupe(data, duplicates, path)
    if plain:
        _no_options(options, fmt, ("delimiter", "name"))
        p = Path(path)
        if p.is_dir():
            raise DataValidationError(f"format {fmt!r} reads one file, not a folder",
                                      file=str(p))
        if fmt == "parquet" and p.suffix.lower() not in (".parquet", ".pq"):
            raise DataValidationError("format 'parquet' needs a .parquet file", file=str(p))
        return read_interactions(p, columns=columns, event=event, value=value,
                                 timestamp_unit=timestamp_unit, duplicates=duplicates,
                                 **options)
    loader = LOADERS[fmt]
    allowed = tuple(k for k in inspect.signature(loader).parameters
                    if k not in ("path", "duplicates"))
    _no_options(options, fmt, allowed)
    return loader(path, duplicates=duplicates, **options)


def _no_options(options: Mapping[str, Any], fmt: str, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise ConfigError(f"option not accepted by format {fmt!r}; accepted: "
                          f"{list(allowed) or 'none'}", key=unknown[0])


def _dedupe(data: Interactions, policy: DuplicatePolicy, path: str | Path) -> Interactions:
    from recscope.data.validate import handle_duplicates

    table = handle_duplicates(data.table, policy, file=str(path))
    return data if table.num_rows == len(data) else data.with_table(table)


def load_split(path: str | Path) -> Split:
    """Read a folder written by ``recscope data split`` (or :meth:`Split.save`) back as a
    :class:`Split`: ``train/``, ``validation/`` and ``test/`` are saved Interactions folders
    (with their side tables). The parts share one user and one item vocabulary, so
    indices agree across parts. (Loading the folder with :func:`load` gives its train part.)
    """
    p = Path(path)
    if not p.is_dir():
        raise DataValidationError("not a split folder (expected a folder with train/, "
                                  "validation/, test/ and split.json)", file=str(p))
    if (p / "train.parquet").exists() and not (p / "train").is_dir():
        raise DataValidationError("a split folder in the old layout (train.parquet); "
                                  "re-run recscope data split", file=str(p))
    for name in Split.PARTS:
        if not (p / name / "interactions.parquet").exists():
            raise DataValidationError("split part not found", file=str(p / name /
                                                                   "interactions.parquet"))
    train = Interactions.load(p / "train")
    parts = [train]
    for name in Split.PARTS[1:]:
        part = Interactions.load(p / name)
        if part.users != train.users or part.items != train.items:
            raise DataValidationError("the split parts do not share one vocabulary",
                                      file=str(p / name))
        parts.append(Interactions(part.table, train.users, train.items,
                                  item_features=part.item_features,
                                  user_features=part.user_features, name=part.name))
    return Split(*parts)
