"""``recscope evaluate|ope --engine stream|spark`` from the command line: the in-memory
numbers, and bad input (a Java that cannot start, a folder given to the memory engine,
--per-user without per-user values) as one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.offline.test_cli import run_cli
from tests.offline.test_scale import _write


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("cli_scale")
    f = _write(d, 400, seed=11)
    t = pq.read_table(f["a"])
    t = t.append_column("part", pa.array(np.asarray(t.column("user_id")) % 4))
    pq.write_to_dataset(t, d / "hive", partition_cols=["part"])
    f["hive"] = str(d / "hive")
    rng = np.random.default_rng(0)
    n = 500
    pq.write_table(pa.table({"round_id": np.arange(n), "reward": rng.random(n) < .3,
                             "pscore": np.full(n, .25), "pi": rng.random(n)}),
                   d / "scored.parquet")
    f["scored"] = str(d / "scored.parquet")
    return f


def test_evaluate_stream_cli_matches_memory(files: dict[str, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A hive-partitioned rankings folder with --engine stream: the means of the memory
    engine on the same rankings as one file, written as the same JSON shape."""
    monkeypatch.chdir(tmp_path)
    common = ["--truth", files["truth"], "--metric", "ndcg@10", "--metric", "mrr",
              "--bootstrap", "200"]
    rc, _, err = run_cli(["evaluate", "--rankings", files["hive"], "--engine", "stream",
                          "--json", "s.json", *common], monkeypatch, capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["evaluate", "--rankings", files["a"], "--engine", "memory",
                          "--json", "m.json", *common], monkeypatch, capsys)
    assert rc == 0, err
    s, m = (json.loads(Path(p).read_text()) for p in ("s.json", "m.json"))
    assert s["kind"] == m["kind"] == "evaluation"
    for a, b in zip(s["estimates"], m["estimates"], strict=True):
        assert a["metric"] == b["metric"] and a["n"] == b["n"]
        assert a["estimate"] == pytest.approx(b["estimate"], abs=1e-9)


def test_bad_engine_inputs(files: dict[str, str], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """A folder for the memory engine, --per-user with stream, a non-column policy."""
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(["evaluate", "--rankings", files["hive"], "--truth", files["truth"],
                          "--engine", "memory", "--json", "x.json"], monkeypatch, capsys)
    assert rc == 2 and "--engine stream or spark" in err and "hive" in err
    rc, _, err = run_cli(["evaluate", "--rankings", files["a"], "--truth", files["truth"],
                          "--engine", "stream", "--per-user", "p.parquet"], monkeypatch,
                         capsys)
    assert rc == 2 and "--per-user" in err
    rc, _, err = run_cli(["ope", "--logs", files["scored"], "--policy", "uniform",
                          "--engine", "stream"], monkeypatch, capsys)
    assert rc == 2 and "column:NAME" in err
    rc, _, err = run_cli(["ope", "--logs", files["scored"], "--policy", "column:pi",
                          "--engine", "stream", "-e", "ips", "-e", "snips", "--json",
                          "o.json"], monkeypatch, capsys)
    assert rc == 0, err
    rows = json.loads(Path("o.json").read_text())["estimates"]
    t = pq.read_table(files["scored"])
    w = t.column("pi").to_numpy() / 0.25
    r = t.column("reward").to_numpy().astype(float)
    assert rows[0]["estimate"] == pytest.approx((w * r).mean(), abs=1e-12)
    assert rows[1]["estimate"] == pytest.approx((w * r).sum() / w.sum(), abs=1e-12)
    assert not any(Path().glob("x.json")) and not any(Path().glob("p.parquet"))


@pytest.mark.parametrize("cmd", ["evaluate", "ope"])
def test_spark_without_java(cmd: str, files: dict[str, str], tmp_path: Path) -> None:
    """JAVA_HOME pointing nowhere: one line naming the problem, exit 2, no output."""
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java")}
    args = (["evaluate", "--rankings", files["a"], "--truth", files["truth"]] if
            cmd == "evaluate" else ["ope", "--logs", files["scored"], "--policy",
                                    "column:pi"])
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "recscope.cli", *args, "--engine", "spark",
                        "--json", str(out)], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "JAVA_HOME" in lines[0] and "no-java" in lines[0], p.stderr
    assert not out.exists() and not (tmp_path / ".recscope").exists()
