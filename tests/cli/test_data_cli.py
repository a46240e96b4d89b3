"""``recscope data describe`` and ``recscope data split``: outputs, one-line errors naming
problem/column/row with a non-zero exit, atomic output and tracking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recscope.cli import data as data_cli
from recscope.data import Interactions, leave_last_n, random_holdout, user_split
from recscope.data.loaders import load_split
from recscope.errors import ConfigError, DataValidationError, RecscopeError
from tests.conftest import data_path, make_log
from tests.data.test_validation import BAD_CELLS, GOOD, with_cell, write_csv


def run(*args: str) -> tuple[int, str, BaseException | None]:
    """Invoke the data app; a RecscopeError exits 2 as ``recscope.cli.main`` makes it."""
    result = CliRunner().invoke(data_cli.app, list(args))
    if isinstance(result.exception, RecscopeError):
        return 2, result.output, result.exception
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output, None


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.parquet"
    pq.write_table(make_log(n_users=60, n_items=50, n_rows=1500, extra=True), path)
    return path


# ---------------------------------------------------------------------- describe
def test_describe_movielens_json(tmp_path: Path) -> None:
    code, out, _ = run("describe", str(data_path("ml-100k")), "--json",
                       str(tmp_path / "s.json"))
    assert code == 0, out
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["n_interactions"], s["n_users"], s["n_items"]) == (100_000, 943, 1_682)
    assert s["time_range"] == ["1997-09-20T03:05:10+00:00", "1998-04-22T23:10:38+00:00"]
    assert s["source"]["format"] == "movielens" and len(s["fingerprint"]) == 16
    assert "100,000" in out and "movielens" in out


def test_describe_csv_with_mapping_and_defaults(tmp_path: Path) -> None:
    src = tmp_path / "events.tsv"
    src.write_text("uid\tpin\tms\na\tp1\t1700000000000\nb\tp2\t1700000060000\n"
                   "a\tp2\t1700000120000\n")
    code, out, _ = run("describe", str(src), "--map", "user_id=uid", "--map", "item_id=pin",
                       "--map", "timestamp=ms", "--timestamp-unit", "ms", "--event", "save",
                       "--value", "1", "--json", str(tmp_path / "s.json"))
    assert code == 0, out
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["n_interactions"], s["n_users"], s["n_items"]) == (3, 2, 2)
    assert s["events"] == {"save": 3}
    assert s["time_range"] == ["2023-11-14T22:13:20+00:00", "2023-11-14T22:15:20+00:00"]


def test_describe_loader_option() -> None:
    code, out, _ = run("describe", str(data_path("coat")), "--option", "part=test")
    assert code == 0 and "4,640" in out


@pytest.mark.parametrize("bad", ["user_id", "user_id=", "=uid"])
def test_malformed_map_is_a_config_error(log_file: Path, bad: str) -> None:
    code, _, exc = run("describe", str(log_file), "--map", bad)
    assert code == 2 and isinstance(exc, ConfigError) and exc.key == "--map"


# ---------------------------------------------------------------------- bad CSVs
@pytest.mark.parametrize(("case", "row", "column", "value", "words"), BAD_CELLS,
                         ids=[c[0] for c in BAD_CELLS])
@pytest.mark.parametrize("command", ["describe", "split"])
def test_bad_csv_fails_naming_problem_column_row(tmp_path: Path, command: str, case: str,
                                                 row: int, column: str, value: str,
                                                 words: list[str]) -> None:
    path = write_csv(tmp_path / "bad.csv", with_cell(row, column, value))
    out_dir = tmp_path / "out"
    extra = ["--method", "random", "--out", str(out_dir)] if command == "split" else \
        ["--json", str(tmp_path / "s.json")]
    code, _, exc = run(command, str(path), *extra)
    assert code == 2 and isinstance(exc, DataValidationError)
    msg = str(exc)
    assert "\n" not in msg and f"column {column!r}" in msg and f"row {row} " in msg
    assert all(w in msg for w in words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # nothing written


def test_missing_column_and_duplicates_via_cli(tmp_path: Path) -> None:
    header = ["user_id", "item_id", "event", "value"]
    rows = [[r[0], r[1], r[3], r[4]] for r in GOOD]
    path = write_csv(tmp_path / "nots.csv", rows, header)
    code, _, exc = run("split", str(path), "--method", "user", "--out", str(tmp_path / "o"))
    assert code == 2 and exc is not None and "missing required column(s) ['timestamp']" in str(exc)
    dup = write_csv(tmp_path / "dup.csv", [*GOOD, GOOD[2]])
    code, _, exc = run("split", str(dup), "--method", "user", "--duplicates", "error",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and isinstance(exc, DataValidationError) and exc.row == 4
    assert not (tmp_path / "o").exists()
    code, _, _ = run("describe", str(dup), "--duplicates", "drop", "--json",
                       str(tmp_path / "s.json"))
    assert code == 0 and json.loads((tmp_path / "s.json").read_text())["n_interactions"] == 4


def test_main_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", with_cell(2, "propensity", "1.5"))
    proc = subprocess.run(
        [sys.executable, "-c", "from recscope.cli import main; main()", "data", "split",
         str(path), "--method", "user", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "'propensity'" in lines[0]
    assert "row 2 (line 4)" in lines[0] and "outside (0, 1]" in lines[0]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- split
@pytest.mark.parametrize(("method", "extra"), [
    ("temporal", ["--test-fraction", "0.2", "--validation-fraction", "0.1"]),
    ("leave-last", ["--n", "2", "--validation-n", "1"]),
    ("random", ["--test-fraction", "0.25", "--validation-fraction", "0.1", "--seed", "3"]),
    ("user", ["--test-fraction", "0.2", "--validation-fraction", "0.2", "--seed", "3"]),
])
def test_split_writes_parts(tmp_path: Path, log_file: Path, method: str,
                            extra: list[str]) -> None:
    out_dir = tmp_path / "split"
    code, out, _ = run("split", str(log_file), "--method", method, *extra, "--out",
                       str(out_dir))
    assert code == 0, out
    info = json.loads((out_dir / "split.json").read_text())
    assert info["params"]["method"] == method
    # each part is a data folder that the loaders read with its side tables
    for name in ("train", "validation", "test"):
        for f in ("interactions", "users", "items"):
            assert (out_dir / name / f"{f}.parquet").exists(), (name, f)
    sizes = [pq.read_metadata(out_dir / n / "interactions.parquet").num_rows
             for n in ("train", "validation", "test")]
    assert sum(sizes) == 1500 and all(s > 0 for s in sizes)
    assert [info["parts"][n]["n_interactions"] for n in ("train", "validation", "test")] == sizes
    split = load_split(out_dir)
    data = Interactions.from_table(make_log(n_users=60, n_items=50, n_rows=1500, extra=True))
    assert split.train.users == data.users and split.test.items == data.items
    assert split.test.users is split.train.users  # one shared vocabulary
    from recscope.data.loaders import detect_format, load

    assert detect_format(out_dir) == "split"  # not mistaken for Amazon JSON
    part = load(out_dir / "train")
    assert part.table.equals(split.train.table) and part.items == data.items
    assert load(out_dir).table.equals(split.train.table)  # the folder loads as its train part
    expected = {"leave-last": lambda: leave_last_n(data, 2, 1),
                "random": lambda: random_holdout(data, 0.25, 0.1, seed=3),
                "user": lambda: user_split(data, 0.2, 0.2, seed=3)}.get(method)
    if expected is not None:
        assert split.test.table.equals(expected().test.table)
        assert info["leakage"]["pairs_train_test"] == 0
    if method == "user":
        assert info["leakage"]["users_train_test"] == 0
    if method == "temporal":
        assert info["time_ranges"]["train"][1] < info["time_ranges"]["test"][0]


def test_split_parts_keep_the_side_tables_on_ml100k(tmp_path: Path) -> None:
    """``train --data split/train`` must see the whole item vocabulary and the topics: the
    train part is a data folder with the item side table, not a bare Parquet file."""
    from recscope.data.loaders import load

    out_dir = tmp_path / "split"
    code, out, _ = run("split", str(data_path("ml-100k")), "--method", "random",
                       "--test-fraction", "0.25", "--out", str(out_dir))
    assert code == 0, out
    train = load(out_dir / "train")
    assert len(train.items) == 1682 and len(train.users) == 943
    assert train.item_features is not None and "topic" in train.item_features.column_names
    assert len(train) + len(load_split(out_dir).test) == 100_000
    truth = pq.read_table(out_dir / "test" / "interactions.parquet")
    assert {"user_id", "item_id"} <= set(truth.column_names)


def test_split_is_logged_to_tracking(tmp_path: Path, log_file: Path) -> None:
    from mlflow.tracking import MlflowClient

    out_dir = tmp_path / "split"
    assert run("split", str(log_file), "--method", "user", "--seed", "11", "--out",
               str(out_dir))[0] == 0
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("recscope")
    runs = client.search_runs([exp.experiment_id], "params.seed = '11'")
    assert len(runs) == 1
    r = runs[0]
    info = json.loads((out_dir / "split.json").read_text())
    assert r.data.params["method"] == "user" and r.info.status == "FINISHED"
    assert r.data.params["input.data"] == info["fingerprint"]
    assert r.data.metrics["test.n_interactions"] == info["parts"]["test"]["n_interactions"]


def test_failed_write_leaves_nothing(tmp_path: Path, log_file: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = pq.write_table

    def failing(table: object, where: object, **kw: object) -> None:
        if "test" in Path(str(where)).parent.name:
            raise OSError("disk full")
        real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", failing)
    out_dir = tmp_path / "runs" / "split"
    result = CliRunner().invoke(data_cli.app, ["split", str(log_file), "--method", "random",
                                               "--out", str(out_dir)])
    assert isinstance(result.exception, OSError)
    assert not out_dir.exists() and list((tmp_path / "runs").iterdir()) == []
    # an existing output survives a failed re-run untouched
    monkeypatch.setattr(pq, "write_table", real)
    assert run("split", str(log_file), "--method", "random", "--out", str(out_dir))[0] == 0
    before = (out_dir / "split.json").read_text()
    monkeypatch.setattr(pq, "write_table", failing)
    result = CliRunner().invoke(data_cli.app, ["split", str(log_file), "--method", "user",
                                               "--out", str(out_dir), "--force"])
    assert isinstance(result.exception, OSError)
    assert (out_dir / "split.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["split"]


def test_time_free_data_refuses_temporal_splits(tmp_path: Path) -> None:
    for method in ("temporal", "leave-last"):
        code, _, exc = run("split", str(data_path("coat")), "--method", method, "--out",
                           str(tmp_path / "o"))
        assert code == 2 and isinstance(exc, ConfigError) and "no time information" in str(exc)
    assert not (tmp_path / "o").exists()
    code, _, _ = run("split", str(data_path("coat")), "--method", "random", "--out",
                     str(tmp_path / "o"))
    assert code == 0
    test = pq.read_table(tmp_path / "o" / "test" / "interactions.parquet")
    assert np.isin(test.column("propensity").to_numpy(), [0.0], invert=True).all()


def test_bad_split_parameters(tmp_path: Path, log_file: Path) -> None:
    code, _, exc = run("split", str(log_file), "--method", "random", "--test-fraction", "1.5",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and isinstance(exc, ConfigError) and exc.key == "--test-fraction"
    code, _, exc = run("split", str(log_file), "--method", "temporal", "--test-start",
                       "yesterday-ish", "--out", str(tmp_path / "o"))
    assert code == 2 and "unparsable timestamp" in str(exc)
    code, _, _ = run("split", str(log_file), "--method", "sideways", "--out",
                     str(tmp_path / "o"))
    assert code != 0
    assert not (tmp_path / "o").exists()


def test_temporal_drop_repeats(tmp_path: Path, log_file: Path) -> None:
    assert run("split", str(log_file), "--method", "temporal", "--out",
               str(tmp_path / "keep"))[0] == 0
    assert run("split", str(log_file), "--method", "temporal", "--drop-repeats", "--out",
               str(tmp_path / "drop"))[0] == 0
    keep = json.loads((tmp_path / "keep" / "split.json").read_text())
    drop = json.loads((tmp_path / "drop" / "split.json").read_text())
    assert keep["leakage"]["pairs_train_test"] > 0
    assert drop["leakage"]["pairs_train_test"] == 0
    assert drop["parts"]["train"] == keep["parts"]["train"]


def test_existing_out_folder_needs_force_and_keeps_user_files(tmp_path: Path,
                                                               log_file: Path) -> None:
    """A non-empty --out is refused before any work; with --force only what recscope wrote
    is replaced and the user's own file survives; a file given as --out is refused."""
    out_dir = tmp_path / "split"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    code, _, exc = run("split", str(log_file), "--method", "random", "--out", str(out_dir))
    assert code == 2 and "--force" in str(exc) and str(out_dir) in str(exc)
    assert sorted(p.name for p in out_dir.iterdir()) == ["notes.txt"]
    assert run("split", str(log_file), "--method", "random", "--out", str(out_dir),
               "--force")[0] == 0
    assert run("split", str(log_file), "--method", "user", "--out", str(out_dir),
               "--force")[0] == 0
    assert (out_dir / "notes.txt").read_text() == "mine"
    assert json.loads((out_dir / "split.json").read_text())["params"]["method"] == "user"
    code, _, exc = run("split", str(log_file), "--method", "random", "--out",
                       str(out_dir / "notes.txt"))
    assert code == 2 and "notes.txt" in str(exc) and "is a file" in str(exc)
    assert (out_dir / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(("content", "name", "words"), [
    (b"", "empty.csv", ["empty.csv", "empty"]),
    (b"not parquet at all", "corrupt.parquet", ["corrupt.parquet", "Parquet"]),
    (b"user_id,item_id,timestamp\nu1,caf\xe9,1\n", "latin1.csv", ["latin1.csv", "UTF-8"]),
    (b"user_id;item_id;timestamp\nu1;i1;1\n", "semicolon.csv", ["semicolon.csv", "delimiter"]),
])
@pytest.mark.parametrize("command", ["describe", "split"])
def test_unreadable_files_are_named_and_nothing_is_written(
        tmp_path: Path, content: bytes, name: str, words: list[str], command: str) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    extra = ["--method", "random", "--out", str(tmp_path / "o")] if command == "split" \
        else ["--json", str(tmp_path / "s.json")]
    code, _, exc = run(command, str(src), *extra)
    assert code == 2 and isinstance(exc, DataValidationError), exc
    assert all(w in str(exc) for w in words) and "\n" not in str(exc)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_directory_where_a_file_is_expected(tmp_path: Path) -> None:
    folder = tmp_path / "events.parquet"
    folder.mkdir()
    code, _, exc = run("describe", str(folder), "--format", "parquet")
    assert code == 2 and "events.parquet" in str(exc) and "folder" in str(exc)
