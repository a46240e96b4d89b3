"""The batch log writer: files are whole, batches and timers flush, back-pressure, reading."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from recscope.errors import DataValidationError
from recscope.serve.logs import LogFull, LogWriter, read_log


def _exposure(i: int, n: int = 4) -> tuple:
    return (1_700_000_000_000_000 + i, f"r{i}", f"u{i % 7}", "exp", "control", "v1",
            "home_feed", n, list(range(n)), [1.0] * n, None, False, False)


def test_batches_become_whole_files(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, batch_rows=40, flush_seconds=60.0)
    for i in range(100):
        w.append("exposures", _exposure(i))
        if i % 10 == 9:
            w.flush()
    files = sorted((tmp_path / "exposures").glob("part-*.parquet"))
    assert len(files) == 10 and not list((tmp_path / "exposures").glob(".*.tmp"))
    w.close()
    log = read_log(tmp_path, "exposures")
    assert log.num_rows == 400
    assert log.column("request_id").to_pylist()[:5] == ["r0"] * 4 + ["r1"]
    assert log.column("position").to_pylist()[:5] == [0, 1, 2, 3, 0]


def test_the_timer_flushes_a_small_batch(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, batch_rows=10_000, flush_seconds=0.05)
    w.append("exposures", _exposure(0))
    assert w.pending_rows() == 4
    deadline = time.monotonic() + 10
    while w.pending_rows() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.pending_rows() == 0 and read_log(tmp_path, "exposures").num_rows == 4
    w.close()


def test_back_pressure_refuses_rather_than_loses(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, batch_rows=100, flush_seconds=60.0, max_pending_rows=100)
    for i in range(24):  # 96 rows wait: below the batch size, the writer sleeps
        w.append("exposures", _exposure(i))
    with pytest.raises(LogFull, match="96 log rows wait"):
        w.append("exposures", _exposure(24, n=8))
    w.close()
    assert read_log(tmp_path, "exposures").num_rows == 96


def test_close_flushes_and_restart_removes_temporaries(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, batch_rows=1000, flush_seconds=60.0)
    w.append("exposures", _exposure(0))
    w.append("feedback", (1, "r0", "u0", "exp", "control", "home_feed", "3", 3, "click",
                          1.0))
    w.close()
    assert read_log(tmp_path, "exposures").num_rows == 4
    assert read_log(tmp_path, "feedback").column("event").to_pylist() == ["click"]
    torn = tmp_path / "exposures" / ".part-1-2-3.parquet.tmp"
    torn.write_bytes(b"PAR1 half a file")
    w2 = LogWriter(tmp_path)
    assert w2.removed_temporaries == 1 and not torn.exists()
    w2.close()
    assert read_log(tmp_path, "exposures").num_rows == 4


def test_reading_names_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="not a recscope serve log"):
        read_log(tmp_path, "exposures")
    (tmp_path / "exposures").mkdir()
    assert read_log(tmp_path, "exposures").num_rows == 0
    bad = tmp_path / "exposures" / "part-0000000000001-1-000001.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataValidationError, match=r"part-0000000000001-1-000001\.parquet"):
        read_log(tmp_path, "exposures")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), bad)
    with pytest.raises(DataValidationError, match="is not the exposures schema"):
        read_log(tmp_path, "exposures")
