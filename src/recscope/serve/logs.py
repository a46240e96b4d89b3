"""The service's append-only exposure and feedback logs (Parquet, written in batches).

Layout of a log folder::

    LOG_DIR/exposures/part-<ms>-<pid>-<seq>.parquet   one row per item shown
    LOG_DIR/feedback/part-<ms>-<pid>-<seq>.parquet    one row per click, save or hide

Requests append records to an in-memory buffer; a background thread turns the buffer into
one Parquet file when it holds ``batch_rows`` rows or its oldest row is ``flush_seconds``
old, and on shutdown. Each file is written under a temporary name, fsync'ed and renamed:
a crash never leaves a torn ``.parquet`` (readers ignore the temporary names, and the next
start deletes them). **Loss bound:** a ``kill -9`` loses the rows not yet renamed into a
file: at most the rows accepted in the last ``flush_seconds`` plus the duration of one
write, and never more than ``max_pending_rows``: when that many rows wait, requests are
refused with 503 instead of being answered without a log row. ``/metrics`` exposes the
rows waiting and the age of the oldest (the log lag).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recscope.errors import DataValidationError

log = logging.getLogger("recscope.serve")

TS = pa.timestamp("us", tz="UTC")

#: One row per item returned by ``POST /recommend``.
EXPOSURE_SCHEMA = pa.schema([
    ("ts", TS),
    ("request_id", pa.string()),
    ("unit_id", pa.string()),
    ("experiment", pa.string()),
    ("arm", pa.string()),                 # null: no experiment (off, outside traffic)
    ("model_version", pa.string()),
    ("surface", pa.string()),
    ("k", pa.int32()),
    ("position", pa.int32()),             # 0-based
    ("item_id", pa.string()),
    ("score", pa.float64()),
    ("propensity", pa.float64()),         # null: deterministic policy
    ("explored", pa.bool_()),
    ("cold_start", pa.bool_()),
])

#: One row per ``POST /feedback``.
FEEDBACK_SCHEMA = pa.schema([
    ("ts", TS),
    ("request_id", pa.string()),
    ("unit_id", pa.string()),
    ("experiment", pa.string()),
    ("arm", pa.string()),
    ("surface", pa.string()),
    ("item_id", pa.string()),
    ("position", pa.int32()),
    ("event", pa.string()),
    ("value", pa.float64()),
])


def exposure_table(records: list[tuple[Any, ...]]) -> pa.Table:
    """Expand request records ``(ts_us, request_id, unit, experiment, arm, version,
    surface, k, items, scores, propensities | None, explored, cold)`` to item rows."""
    lens = np.fromiter((len(r[8]) for r in records), dtype=np.int64, count=len(records))
    rep = np.repeat(np.arange(len(records)), lens)

    def per_request(i: int, typ: pa.DataType) -> pa.Array:
        return pa.array([r[i] for r in records], typ).take(pa.array(rep))

    items: list[Any] = []
    scores: list[float] = []
    props: list[float | None] = []
    for r in records:
        items.extend(r[8])
        scores.extend(r[9])
        props.extend(r[10] if r[10] is not None else [None] * len(r[8]))
    starts = np.cumsum(lens) - lens
    position = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(starts, lens)
    return pa.table([
        per_request(0, pa.int64()).cast(TS), per_request(1, pa.string()),
        per_request(2, pa.string()), per_request(3, pa.string()),
        per_request(4, pa.string()), per_request(5, pa.string()),
        per_request(6, pa.string()), per_request(7, pa.int32()),
        pa.array(position.astype(np.int32)), pa.array([str(x) for x in items], pa.string()),
        pa.array(scores, pa.float64()), pa.array(props, pa.float64()),
        per_request(11, pa.bool_()), per_request(12, pa.bool_()),
    ], schema=EXPOSURE_SCHEMA)


def feedback_table(records: list[tuple[Any, ...]]) -> pa.Table:
    """Feedback records ``(ts_us, request_id, unit, experiment, arm, surface, item,
    position, event, value)`` as a table."""
    cols = list(zip(*records, strict=True)) if records else [[] for _ in FEEDBACK_SCHEMA]
    return pa.table([pa.array(list(c), f.type if f.name != "ts" else pa.int64())
                     if f.name != "ts" else pa.array(list(c), pa.int64()).cast(TS)
                     for c, f in zip(cols, FEEDBACK_SCHEMA, strict=True)],
                    schema=FEEDBACK_SCHEMA)


class LogFull(RuntimeError):
    """Too many rows wait for the writer: the request must be refused (503)."""


class _Buffer:
    def __init__(self, name: str, build: Callable[[list[tuple[Any, ...]]], pa.Table],
                 rows_of: Callable[[tuple[Any, ...]], int]) -> None:
        self.name = name
        self.build = build
        self.rows_of = rows_of
        self.records: list[tuple[Any, ...]] = []
        self.rows = 0
        self.oldest = 0.0
        self.written_rows = 0
        self.written_files = 0


class LogWriter:
    """Background batch writer of the exposure and feedback logs (see the module doc)."""

    def __init__(self, directory: str | os.PathLike[str], *, batch_rows: int = 8192,
                 flush_seconds: float = 1.0, max_pending_rows: int = 1_000_000) -> None:
        if batch_rows < 1 or flush_seconds <= 0 or max_pending_rows < batch_rows:
            raise ValueError("need batch_rows >= 1, flush_seconds > 0 and "
                             "max_pending_rows >= batch_rows")
        self.directory = Path(directory)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        self._buffers = {
            "exposures": _Buffer("exposures", exposure_table, lambda r: len(r[8])),
            "feedback": _Buffer("feedback", feedback_table, lambda r: 1)}
        self._cond = threading.Condition()
        self._stop = False
        self._seq = 0
        self._writing = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self.removed_temporaries = 0
        for name in self._buffers:
            folder = self.directory / name
            folder.mkdir(parents=True, exist_ok=True)
            for tmp in folder.glob(".*.tmp"):  # torn writes of a crashed run: never renamed
                tmp.unlink()
                self.removed_temporaries += 1
        self._thread = threading.Thread(target=self._run, name="recscope-log-writer",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producers
    def append(self, table: str, record: tuple[Any, ...]) -> None:
        """Queue one record of ``table`` ("exposures" or "feedback"); raises
        :class:`LogFull` when ``max_pending_rows`` rows already wait."""
        buf = self._buffers[table]
        n = buf.rows_of(record)
        with self._cond:
            if self._stop:
                raise LogFull("the log is closed")
            if self.pending_rows() + n > self.max_pending_rows:
                raise LogFull(f"{self.pending_rows()} log rows wait for the writer")
            if not buf.records:
                buf.oldest = time.monotonic()
            buf.records.append(record)
            buf.rows += n
            if buf.rows >= self.batch_rows:
                self._cond.notify()

    def pending_rows(self) -> int:
        """Rows accepted but not yet in a renamed file (what a crash now would lose)."""
        return sum(b.rows for b in self._buffers.values()) + self._writing

    def lag_seconds(self) -> float:
        """Age of the oldest row not yet written (0 when nothing waits)."""
        now = time.monotonic()
        ages = [now - b.oldest for b in self._buffers.values() if b.records]
        return max(ages) if ages else 0.0

    def stats(self) -> dict[str, Any]:
        """Counts for /metrics and /health."""
        return {"pending_rows": self.pending_rows(), "lag_seconds": self.lag_seconds(),
                "write_errors": self.write_errors,
                "rows_written": {n: b.written_rows for n, b in self._buffers.items()},
                "files_written": {n: b.written_files for n, b in self._buffers.items()}}

    # ------------------------------------------------------------------ writer thread
    def _due(self) -> list[_Buffer]:
        now = time.monotonic()
        return [b for b in self._buffers.values() if b.records and (
            self._stop or b.rows >= self.batch_rows or now - b.oldest >= self.flush_seconds)]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._due():
                    self._cond.wait(timeout=min(0.05, self.flush_seconds / 4))
                stopping = self._stop
                batches = []
                for b in self._due():
                    batches.append((b, b.records, b.rows))
                    b.records, b.rows = [], 0
                self._writing = sum(r for _, _, r in batches)
            for b, records, rows in batches:
                self._write(b, records, rows)
            with self._cond:
                self._writing = 0
                self._cond.notify_all()
                if stopping and not any(b.records for b in self._buffers.values()):
                    return

    def _write(self, buf: _Buffer, records: list[tuple[Any, ...]], rows: int) -> None:
        self._seq += 1
        name = f"part-{int(time.time() * 1000):013d}-{os.getpid()}-{self._seq:06d}.parquet"
        folder = self.directory / buf.name
        tmp = folder / f".{name}.tmp"
        for attempt in range(3):
            try:
                table = buf.build(records)
                with open(tmp, "wb") as fh:
                    pq.write_table(table, fh, compression="zstd")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, folder / name)
                _fsync_dir(folder)
                buf.written_rows += rows
                buf.written_files += 1
                return
            except Exception as exc:  # disk full, permissions: retry, then keep serving
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("exposure log write failed (attempt %d): %s", attempt + 1,
                          self.last_error)
                if tmp.exists():
                    tmp.unlink()
                time.sleep(0.1 * (attempt + 1))
        log.error("dropped %d %s rows after 3 failed writes", rows, buf.name)

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything and stop the thread (called on shutdown)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Write every queued row now and wait until it is in a file."""
        deadline = time.monotonic() + timeout
        with self._cond:
            for b in self._buffers.values():
                if b.records:
                    b.oldest = -1e9  # due now
            self._cond.notify_all()
            while self.pending_rows() and time.monotonic() < deadline:
                self._cond.wait(timeout=0.05)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(log_dir: str | os.PathLike[str], table: str) -> pa.Table:
    """Every row of one log table ("exposures" or "feedback"), in file order; files
    being written (temporary names) are ignored. Raises DataValidationError naming the
    file that cannot be read."""
    if table not in ("exposures", "feedback"):
        raise ValueError(f"unknown log table {table!r}")
    folder = Path(log_dir) / table
    schema = EXPOSURE_SCHEMA if table == "exposures" else FEEDBACK_SCHEMA
    if not folder.is_dir():
        raise DataValidationError(f"no {table}/ folder: not a recscope serve log",
                                  file=str(log_dir))
    parts = []
    for f in sorted(folder.glob("part-*.parquet")):
        try:
            t = pq.read_table(f)
        except (OSError, pa.ArrowException) as exc:
            raise DataValidationError(f"unreadable log file: {exc}", file=str(f)) from None
        if not t.schema.equals(schema):
            raise DataValidationError(f"schema {t.schema.names} is not the {table} schema",
                                      file=str(f))
        parts.append(t)
    return pa.concat_tables(parts) if parts else schema.empty_table()
