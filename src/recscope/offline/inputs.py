"""Rankings and truth from files with external ids (the ``recscope evaluate`` inputs).

A rankings file has ``user_id``, ``item_id`` and ``score`` (higher first; ties broken by
item id) or ``rank`` (1 = first); a truth file has ``user_id``, ``item_id`` and an optional
``grade``. One user and one item vocabulary is built from the truth and every rankings
file together, so the systems being compared share user indices.

Policies: a missing column, a null id, a NaN or infinite score, a non-positive or
repeated rank, a repeated (user, item) pair in a ranking or in the truth all raise
:class:`DataValidationError` naming the file, column and row. Users that appear in a
ranking but not in the truth have no relevant items and are not counted (reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from recscope.data.rankings import RankedLists, Relevance, first_duplicate, lists_from_pairs
from recscope.data.readers import read_table
from recscope.data.vocab import Vocabulary
from recscope.errors import DataValidationError


@dataclass
class EvaluationInputs:
    """Truth and rankings on shared vocabularies, plus the files' extra columns."""

    truth: Relevance
    rankings: dict[str, RankedLists]
    users: Vocabulary
    items: Vocabulary
    truth_table: pa.Table
    ranking_tables: dict[str, pa.Table]
    notes: dict[str, int] = field(default_factory=dict)
    exclude: Relevance | None = None

    def user_column(self, column: str) -> pa.Array:
        """One value per user index from a per-user column of the truth or a ranking file;
        raises when the column varies within a user."""
        for name, table in [("truth", self.truth_table), *self.ranking_tables.items()]:
            if column in table.column_names:
                return _per_user(table, column, self.users, name)
        raise DataValidationError(f"slice column not found in the truth or rankings files "
                                  f"(truth has {self.truth_table.column_names})",
                                  column=column)


def _require(table: pa.Table, columns: list[str], file: str) -> None:
    for c in columns:
        if c not in table.column_names:
            raise DataValidationError(f"missing required column; found {table.column_names}",
                                      file=file, column=c)
        col = table.column(c)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataValidationError("null value", file=file, column=c, row=row)


def read_truth(path: str | Path) -> pa.Table:
    """Read and check a truth file (``user_id``, ``item_id``, optional ``grade``)."""
    file = str(path)
    t = read_table(path)
    _require(t, ["user_id", "item_id"], file)
    if "grade" in t.column_names:
        _require(t, ["grade"], file)
        typ = t.column("grade").type
        if not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
            raise DataValidationError(f"expected numbers, found {typ}", file=file,
                                      column="grade")
        g = t.column("grade").to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(g))
        if len(bad):
            raise DataValidationError("grade is not a finite number", file=file,
                                      column="grade", row=int(bad[0]))
    return t


def read_rankings(path: str | Path) -> pa.Table:
    """Read and check a rankings file (``user_id``, ``item_id``, ``score`` or ``rank``)."""
    file = str(path)
    t = read_table(path)
    _require(t, ["user_id", "item_id"], file)
    if "rank" not in t.column_names and "score" not in t.column_names:
        raise DataValidationError(f"needs a 'score' or a 'rank' column; found "
                                  f"{t.column_names}", file=file, column="score")
    for col in ("rank", "score"):
        if col not in t.column_names:
            continue
        _require(t, [col], file)
        typ = t.column(col).type
        if not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
            raise DataValidationError(f"expected numbers, found {typ}", file=file, column=col)
        v = t.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(v) if col == "score" else
                             (~np.isfinite(v) | (v < 1) | (v != np.round(v))))
        if len(bad):
            what = "score is NaN or infinite" if col == "score" else \
                "rank must be an integer >= 1"
            raise DataValidationError(what, file=file, column=col, row=int(bad[0]))
    return t


def _common_type(cols: list[pa.ChunkedArray]) -> list[pa.ChunkedArray]:
    types = {c.type for c in cols}
    if len(types) <= 1:
        return cols
    if all(pa.types.is_integer(t) for t in types):
        return [c.cast(pa.int64()) for c in cols]
    return [c.cast(pa.string()) for c in cols]


def to_ranked_lists(t: pa.Table, users: Vocabulary, items: Vocabulary, file: str,
                    ) -> RankedLists:
    """Dense lists ordered by rank (or by score, ties by item id), padded with -1."""
    col = "rank" if "rank" in t.column_names else "score"
    values = t.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
    return lists_from_pairs(users.index(t.column("user_id")), items.index(t.column("item_id")),
                            score=None if col == "rank" else values,
                            rank=values if col == "rank" else None, file=file,
                            item_ids=t.column("item_id"), user_ids=t.column("user_id"),
                            columns=("item_id", col))


def _with_line(exc: DataValidationError) -> DataValidationError:
    """The same error with the text line (header = line 1) of a CSV/TSV row added."""
    if exc.row is None or exc.line is not None or exc.file is None or \
            Path(exc.file).suffix.lower() in (".parquet", ".pq"):
        return exc
    return DataValidationError(exc.problem, file=exc.file, column=exc.column, row=exc.row,
                               line=exc.row + 2)


def load_inputs(truth_path: str | Path, rankings: dict[str, str | Path],
                exclude_path: str | Path | None = None) -> EvaluationInputs:
    """Read the truth and every rankings file onto shared vocabularies; ``exclude_path``
    (``user_id``, ``item_id``: e.g. training pairs) lists items dropped from each user's
    lists and truth (pairs whose user or item appears nowhere else are ignored).

    Every problem is one :class:`DataValidationError` naming the file, the column and the
    row (and, for text files, the line)."""
    try:
        return _load_inputs(truth_path, rankings, exclude_path)
    except DataValidationError as exc:
        raise _with_line(exc) from None


def _load_inputs(truth_path: str | Path, rankings: dict[str, str | Path],
                 exclude_path: str | Path | None = None) -> EvaluationInputs:
    tt = read_truth(truth_path)
    rts = {name: read_rankings(p) for name, p in rankings.items()}
    ucols = _common_type([tt.column("user_id"), *[t.column("user_id") for t in rts.values()]])
    icols = _common_type([tt.column("item_id"), *[t.column("item_id") for t in rts.values()]])
    tt = tt.set_column(tt.column_names.index("user_id"), "user_id", ucols[0])
    tt = tt.set_column(tt.column_names.index("item_id"), "item_id", icols[0])
    for j, name in enumerate(rts):
        t = rts[name]
        t = t.set_column(t.column_names.index("user_id"), "user_id", ucols[j + 1])
        rts[name] = t.set_column(t.column_names.index("item_id"), "item_id", icols[j + 1])
    users = Vocabulary.from_values(pa.chunked_array(
        [c for col in ucols for c in col.chunks], ucols[0].type), name="user_id")
    items = Vocabulary.from_values(pa.chunked_array(
        [c for col in icols for c in col.chunks], icols[0].type), name="item_id")
    tu, ti = users.index(tt.column("user_id")), items.index(tt.column("item_id"))
    dup = first_duplicate(tu.astype(np.int64) * max(len(items), 1) + ti)
    if dup is not None:
        raise DataValidationError("(user_id, item_id) pair repeated in the truth",
                                  file=str(truth_path), column="item_id", row=dup)
    grades = None
    if "grade" in tt.column_names:
        grades = tt.column("grade").to_numpy(zero_copy_only=False).astype(np.float64)
    truth = Relevance.from_pairs(tu, ti, len(users), len(items), grades)
    lists = {name: to_ranked_lists(t, users, items, str(rankings[name]))
             for name, t in rts.items()}
    truth_users = np.unique(tu)
    notes = {f"{name}.users_not_in_truth": len(np.setdiff1d(rl.users, truth_users))
             for name, rl in lists.items()}
    exclude = None
    if exclude_path is not None:
        et = read_table(exclude_path)
        _require(et, ["user_id", "item_id"], str(exclude_path))
        eu = users.index(et.column("user_id").cast(ucols[0].type), missing="ignore")
        ei = items.index(et.column("item_id").cast(icols[0].type), missing="ignore")
        ok = (eu >= 0) & (ei >= 0)
        exclude = Relevance.from_pairs(eu[ok], ei[ok], len(users), len(items))
        notes["exclude.pairs_used"] = int(ok.sum())
    return EvaluationInputs(truth, lists, users, items, tt, rts, notes, exclude)


def _per_user(table: pa.Table, column: str, users: Vocabulary, name: str) -> pa.Array:
    u = users.index(table.column("user_id"))
    vals = table.column(column).to_pylist()
    out: list[object] = [None] * len(users)
    for row, (ui, v) in enumerate(zip(u.tolist(), vals, strict=True)):
        if out[ui] is None:
            out[ui] = v
        elif v is not None and out[ui] != v:
            raise DataValidationError(f"slice column varies within user "
                                      f"{table.column('user_id')[row].as_py()!r} ({name} file)",
                                      column=column, row=row)
    return pa.array(out)

