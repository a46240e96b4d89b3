"""``Interactions``: the canonical, Arrow-backed interaction log with id vocabularies."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from recscope.data.validate import DuplicatePolicy, parse_timestamps, validate_interactions
from recscope.data.vocab import Vocabulary
from recscope.errors import DataValidationError
from recscope.io import atomic_dir, write_json

Weights = Literal["binary", "value", "count"]


@dataclass(frozen=True)
class UserSequences:
    """Per-user, time-ordered item sequences in CSR layout.

    User ``u``'s items are ``items[indptr[u]:indptr[u + 1]]``, oldest first (ties broken
    by original row order); ``timestamps`` are epoch microseconds aligned with ``items``.
    """

    indptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray

    def __getitem__(self, user: int) -> np.ndarray:
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


class Interactions:
    """An interaction log in the canonical schema plus user and item vocabularies.

    Every table derived from this one (filters that keep the vocabulary, splits) shares
    the same vocabularies, so dense indices agree across train, validation and test.
    """

    def __init__(
        self,
        table: pa.Table,
        users: Vocabulary,
        items: Vocabulary,
        *,
        item_features: pa.Table | None = None,
        user_features: pa.Table | None = None,
        name: str | None = None,
    ) -> None:
        self.table = table
        self.users = users
        self.items = items
        self.item_features = item_features
        self.user_features = user_features
        self.name = name
        self._user_index: np.ndarray | None = None
        self._item_index: np.ndarray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_table(
        cls,
        table: pa.Table,
        *,
        file: str | None = None,
        duplicates: DuplicatePolicy = "keep",
        item_features: pa.Table | None = None,
        user_features: pa.Table | None = None,
        users: Vocabulary | None = None,
        items: Vocabulary | None = None,
        name: str | None = None,
    ) -> Interactions:
        """Validate ``table`` and build vocabularies (ids of side tables included)."""
        clean = validate_interactions(table, file=file, duplicates=duplicates)
        if item_features is not None:
            item_features = _check_side_table(item_features, "item_id", file)
        if user_features is not None:
            user_features = _check_side_table(user_features, "user_id", file)
        if users is None:
            users = Vocabulary.from_values(
                _concat_ids(clean.column("user_id"), user_features, "user_id"), name="user_id")
        if items is None:
            items = Vocabulary.from_values(
                _concat_ids(clean.column("item_id"), item_features, "item_id"), name="item_id")
        out = cls(clean, users, items, item_features=item_features,
                  user_features=user_features, name=name)
        out.user_index  # noqa: B018 - checks every id is in the vocabulary
        out.item_index  # noqa: B018
        return out

    @classmethod
    def from_pandas(cls, df: object, **kwargs: object) -> Interactions:
        """Build from a pandas DataFrame with canonical column names."""
        return cls.from_table(pa.Table.from_pandas(df, preserve_index=False), **kwargs)  # type: ignore[arg-type]

    def with_table(self, table: pa.Table) -> Interactions:
        """A new log over ``table`` (already canonical) with the same vocabularies."""
        return Interactions(table, self.users, self.items, item_features=self.item_features,
                            user_features=self.user_features, name=self.name)

    # ------------------------------------------------------------------ basic views
    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        return (f"Interactions({self.name or 'unnamed'}: {len(self):,} rows, "
                f"{self.n_users:,} users, {self.n_items:,} items)")

    @property
    def n_users(self) -> int:
        """Size of the user vocabulary (users without interactions here included)."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Size of the item vocabulary (items without interactions here included)."""
        return len(self.items)

    @property
    def user_index(self) -> np.ndarray:
        """Dense int32 user index of every row."""
        if self._user_index is None:
            self._user_index = self.users.index(self.table.column("user_id"))
        return self._user_index

    @property
    def item_index(self) -> np.ndarray:
        """Dense int32 item index of every row."""
        if self._item_index is None:
            self._item_index = self.items.index(self.table.column("item_id"))
        return self._item_index

    @property
    def timestamps(self) -> np.ndarray:
        """Epoch microseconds (int64) of every row."""
        return self.table.column("timestamp").cast(pa.int64()).to_numpy()

    def column(self, name: str) -> np.ndarray:
        """A column as a numpy array (raises naming the column when absent)."""
        if name not in self.table.column_names:
            raise DataValidationError(f"no such column; have {self.table.column_names}",
                                      column=name)
        return self.table.column(name).to_numpy()

    # ------------------------------------------------------------------ selection
    def select(self, mask: np.ndarray) -> Interactions:
        """Rows where ``mask`` is true, same vocabularies."""
        out = self.with_table(self.table.filter(pa.array(np.asarray(mask, dtype=bool))))
        if self._user_index is not None:
            out._user_index = self._user_index[mask]
        if self._item_index is not None:
            out._item_index = self._item_index[mask]
        return out

    def take(self, rows: np.ndarray) -> Interactions:
        """Rows by position, same vocabularies."""
        rows = np.asarray(rows, dtype=np.int64)
        out = self.with_table(self.table.take(pa.array(rows)))
        if self._user_index is not None:
            out._user_index = self._user_index[rows]
        if self._item_index is not None:
            out._item_index = self._item_index[rows]
        return out

    def filter(
        self,
        *,
        events: list[str] | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
        k_core: int | None = None,
        compact: bool = False,
    ) -> Interactions:
        """Keep rows by event type and time range [start, end), then by activity.

        ``min_*_interactions`` apply once; ``k_core`` repeats until every remaining user and
        item has at least k interactions. ``compact`` rebuilds the vocabularies to the ids
        left (indices change); otherwise the vocabularies are kept.
        """
        mask = np.ones(len(self), dtype=bool)
        if events is not None:
            mask &= np.isin(self.table.column("event").to_numpy(zero_copy_only=False),
                            np.asarray(events, dtype=object))
        ts = self.timestamps
        if start is not None:
            mask &= ts >= _to_micros(start, "start")
        if end is not None:
            mask &= ts < _to_micros(end, "end")
        ui, ii = self.user_index, self.item_index
        if min_user_interactions or min_item_interactions:
            mask &= _min_count_mask(ui, ii, mask, self.n_users, self.n_items,
                                    min_user_interactions, min_item_interactions)
        if k_core:
            while True:
                keep = _min_count_mask(ui, ii, mask, self.n_users, self.n_items, k_core, k_core)
                new = mask & keep
                if new.sum() == mask.sum():
                    break
                mask = new
        out = self.select(mask)
        return out.compact() if compact else out

    def compact(self) -> Interactions:
        """Rebuild vocabularies to the ids present in the rows (side tables filtered too)."""
        users = Vocabulary.from_values(self.table.column("user_id"), name="user_id")
        items = Vocabulary.from_values(self.table.column("item_id"), name="item_id")
        item_features = self.item_features
        if item_features is not None:
            item_features = item_features.filter(pc.is_in(item_features.column("item_id"),
                                                          value_set=items.ids))
        user_features = self.user_features
        if user_features is not None:
            user_features = user_features.filter(pc.is_in(user_features.column("user_id"),
                                                          value_set=users.ids))
        return Interactions(self.table, users, items, item_features=item_features,
                            user_features=user_features, name=self.name)

    # ------------------------------------------------------------------ conversions
    def to_csr(self, weights: Weights = "binary") -> sp.csr_matrix:
        """User × item matrix: 1 per pair (binary), summed ``value``, or interaction counts."""
        if weights in ("binary", "count"):
            data = np.ones(len(self), dtype=np.float32)
        elif weights == "value":
            data = self.column("value").astype(np.float32)
        else:
            raise ValueError(f"weights must be 'binary', 'value' or 'count', not {weights!r}")
        m = sp.csr_matrix((data, (self.user_index, self.item_index)),
                          shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        if weights == "binary":
            m.data[:] = 1.0
        m.sort_indices()
        return m

    def sequences(self) -> UserSequences:
        """Per-user item sequences ordered by time (stable for equal timestamps)."""
        ui, ts = self.user_index, self.timestamps
        order = np.lexsort((np.arange(len(self)), ts, ui))
        counts = np.bincount(ui, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return UserSequences(indptr, self.item_index[order], ts[order])

    def to_pandas(self) -> object:
        return self.table.to_pandas()

    # ------------------------------------------------------------------ description
    def summary(self) -> dict[str, object]:
        """Counts, time range, event mix and activity/popularity distributions."""
        n = len(self)
        ui, ii = self.user_index, self.item_index
        ucount = np.bincount(ui, minlength=self.n_users)
        icount = np.bincount(ii, minlength=self.n_items)
        active_u, active_i = ucount[ucount > 0], icount[icount > 0]
        ts = self.timestamps
        events = pc.value_counts(self.table.column("event")).to_pylist()
        out: dict[str, object] = {
            "name": self.name,
            "n_interactions": n,
            "n_users": int(active_u.size),
            "n_items": int(active_i.size),
            "n_users_vocabulary": self.n_users,
            "n_items_vocabulary": self.n_items,
            # distinct (user, item) pairs over active users x items (repeats count once)
            "density": float(np.unique(ui.astype(np.int64) * self.n_items + ii).size
                             / max(1, active_u.size * active_i.size)),
            "time_range": [_iso(ts.min()), _iso(ts.max())] if n else [None, None],
            "events": {e["values"]: int(e["counts"]) for e in events},
            "interactions_per_user": _quantiles(active_u),
            "interactions_per_item": _quantiles(active_i),
            "item_popularity_gini": _gini(icount),
            "columns": self.table.column_names,
        }
        if "surface" in self.table.column_names:
            out["surfaces"] = {e["values"]: int(e["counts"])
                               for e in pc.value_counts(self.table.column("surface")).to_pylist()}
        if "value" in self.table.column_names and n:
            v = self.column("value")
            out["value"] = {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())}
        return out

    def fingerprint(self) -> str:
        """A short, stable hash of the rows and vocabularies (for lineage and versions)."""
        h = hashlib.sha256()
        h.update(self.user_index.tobytes())
        h.update(self.item_index.tobytes())
        h.update(self.timestamps.tobytes())
        if "value" in self.table.column_names:
            h.update(self.column("value").astype(np.float64).tobytes())
        h.update(str((self.n_users, self.n_items)).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the log, vocabularies and side tables to a directory of Parquet files."""
        with atomic_dir(path) as tmp:
            pq.write_table(self.table, tmp / "interactions.parquet", compression="zstd")
            pq.write_table(pa.table({"user_id": self.users.ids}), tmp / "users.parquet")
            pq.write_table(pa.table({"item_id": self.items.ids}), tmp / "items.parquet")
            if self.item_features is not None:
                pq.write_table(self.item_features, tmp / "item_features.parquet")
            if self.user_features is not None:
                pq.write_table(self.user_features, tmp / "user_features.parquet")
            write_json(tmp / "meta.json", {"format": "recscope.interactions/1", "name": self.name})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Interactions:
        """Read a directory written by :meth:`save`."""
        from recscope.data.readers import read_parquet

        p = Path(path)
        if not (p / "interactions.parquet").exists():
            raise DataValidationError("not a saved Interactions directory "
                                      "(no interactions.parquet)", file=str(p))
        try:
            meta = json.loads((p / "meta.json").read_text("utf-8")) \
                if (p / "meta.json").exists() else {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataValidationError(f"cannot read: {exc}", file=str(p / "meta.json")) from None
        opt = {n: read_parquet(p / f"{n}.parquet") if (p / f"{n}.parquet").exists() else None
               for n in ("item_features", "user_features")}

        def ids(name: str, column: str) -> Vocabulary:
            t = read_parquet(p / f"{name}.parquet")
            if column not in t.column_names:
                raise DataValidationError(f"no {column!r} column", file=str(p / f"{name}.parquet"),
                                          column=column)
            return Vocabulary(t.column(column).combine_chunks(), name=column)

        return cls(read_parquet(p / "interactions.parquet"), ids("users", "user_id"),
                   ids("items", "item_id"), item_features=opt["item_features"],
                   user_features=opt["user_features"], name=meta.get("name"))


# ---------------------------------------------------------------------- helpers
def _check_side_table(table: pa.Table, key: str, file: str | None) -> pa.Table:
    if key not in table.column_names:
        raise DataValidationError(f"side table has no {key!r} column", file=file, column=key)
    col = table.column(key)
    if col.null_count:
        raise DataValidationError("null id in side table", file=file, column=key,
                                  row=int(np.flatnonzero(col.is_null().to_numpy(
                                      zero_copy_only=False))[0]))
    t = col.type
    target = pa.int64() if pa.types.is_integer(t) else pa.string()
    return table.set_column(table.column_names.index(key), key, pc.cast(col, target))


def _concat_ids(col: pa.ChunkedArray, side: pa.Table | None, key: str) -> pa.ChunkedArray:
    if side is None:
        return col
    other = side.column(key)
    if other.type != col.type:
        raise DataValidationError(
            f"side-table ids are {other.type} but interaction ids are {col.type}", column=key)
    return pa.chunked_array(col.chunks + other.chunks, type=col.type)


def _min_count_mask(ui: np.ndarray, ii: np.ndarray, mask: np.ndarray, n_users: int,
                    n_items: int, min_u: int, min_i: int) -> np.ndarray:
    ucount = np.bincount(ui[mask], minlength=n_users)
    icount = np.bincount(ii[mask], minlength=n_items)
    return (ucount[ui] >= min_u) & (icount[ii] >= min_i)


def _to_micros(value: datetime | str, name: str) -> int:
    arr = parse_timestamps(pa.array([value]), column=name)
    return int(arr.cast(pa.int64())[0].as_py())


def _iso(micros: int) -> str:
    return pa.scalar(int(micros), type=pa.timestamp("us", tz="UTC")).as_py().isoformat()


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {}
    q = np.quantile(x, [0.0, 0.25, 0.5, 0.75, 0.99, 1.0])
    return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "p99": float(q[4]), "max": float(q[5]), "mean": float(x.mean())}


def _gini(counts: np.ndarray) -> float:
    """Gini coefficient of a non-negative count vector (0 equal, 1 concentrated)."""
    x = np.sort(counts.astype(np.float64))
    n = x.size
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)
