"""The simulated corpus and the history store (build, show, bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recscope.cli import run
from recscope.errors import DataValidationError
from recscope.history.corpus import (
    BASELINE_SPEC,
    CorpusConfig,
    evaluate_candidate,
    prepare,
    rerank,
    sample_candidates,
)
from recscope.history.store import build_history, check_history, online_metrics


def test_corpus_records_have_every_signal(tiny_corpus: Path) -> None:
    t = pq.read_table(tiny_corpus / "history.parquet")
    assert t.num_rows == 12
    for c in ("offline_ndcg_estimate", "offline_recall_estimate", "ope_estimate",
              "replay_estimate", "online_clicks_estimate", "online_clicks_se", "true_clicks",
              "true_clicks_long_run"):
        v = t.column(c).to_numpy(zero_copy_only=False)
        assert np.isfinite(v).all(), c
    assert online_metrics(t) == ["clicks", "saves", "sessions"]
    daily = t.column("online_clicks_daily_estimate").to_pylist()
    assert all(len(d) == CorpusConfig.tiny().days for d in daily)
    # the last daily readout is the readout
    assert np.allclose([d[-1] for d in daily], t.column("online_clicks_estimate").to_numpy())
    assert len(set(t.column("split_fingerprint").to_pylist())) == 1
    assert len(list((tiny_corpus / "candidates").glob("c*.json"))) == 12


def test_signals_track_the_truth(tiny_corpus: Path) -> None:
    """Replay and the readout are informative about the true effect (not noise)."""
    t = pq.read_table(tiny_corpus / "history.parquet")
    truth = t.column("true_clicks").to_numpy()
    for c in ("replay_estimate", "online_clicks_estimate"):
        r = np.corrcoef(t.column(c).to_numpy(), truth)[0, 1]
        assert r > 0.5, (c, r)


def test_baseline_against_itself_is_zero() -> None:
    """The baseline as a candidate: no offline, OPE, replay or true difference."""
    shared = prepare(CorpusConfig.tiny(n=1))
    rec = evaluate_candidate(BASELINE_SPEC, shared)
    assert rec["offline"]["ndcg@10"]["estimate"] == 0.0
    assert rec["ope"]["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert rec["replay"]["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert rec["truth"]["clicks"]["effect"] == pytest.approx(0.0, abs=1e-12)
    # and a candidate is deterministic
    spec = sample_candidates(1, 0)[0]
    a, b = evaluate_candidate(spec, shared), evaluate_candidate(spec, shared)
    assert json.dumps(a, default=str) == json.dumps(b, default=str)


def test_rerankers() -> None:
    items = np.array([[0, 1, 2, 3, 4, 5]])
    topic = np.array([0, 0, 0, 1, 1, 2])
    out = rerank(items, 4, {"kind": "diversity", "max_per_topic": 1}, topic, np.zeros(6))
    assert out.tolist() == [[0, 3, 5, 1]]
    head = np.array([0.0, 0.5, 0.01, 0.9, 0.9, 0.9])  # popularity rank share
    out = rerank(items, 3, {"kind": "demote_popular", "head_share": 0.05, "penalty": 10},
                 topic, head)
    assert out.tolist() == [[1, 3, 4]]


def test_build_from_results_equals_simulated_table(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.parquet"
    assert run(["history", "build", "--results", str(tiny_corpus / "candidates"),
                "--out", str(out)]) == 0
    a, b = pq.read_table(out), pq.read_table(tiny_corpus / "history.parquet")
    assert a.num_rows == b.num_rows
    for c in b.column_names:
        x, y = a.column(c).to_pylist(), b.column(c).to_pylist()
        assert all(u == v or (u != u and v != v) for u, v in zip(x, y, strict=True)), c


def test_build_from_mlflow_round_trip(tiny_corpus: Path, tmp_path: Path) -> None:
    from recscope.history.store import log_candidates, records_from_results

    recs = records_from_results([tiny_corpus / "candidates"])[:4]
    log_candidates(recs, str(tmp_path / "ml"))
    t = build_history(tracking=str(tmp_path / "ml"))
    assert sorted(t.column("candidate_id").to_pylist()) == sorted(r["candidate_id"]
                                                                  for r in recs)
    ref = pq.read_table(tiny_corpus / "history.parquet")
    ids = ref.column("candidate_id").to_pylist()
    for row in t.to_pylist():
        i = ids.index(row["candidate_id"])
        assert row["true_clicks"] == pytest.approx(ref.column("true_clicks")[i].as_py())
        assert row["online_clicks_daily_estimate"] == pytest.approx(
            ref.column("online_clicks_daily_estimate")[i].as_py())
    # both sources together: one row per (model_version, experiment)
    both = build_history(tracking=str(tmp_path / "ml"), results=[tiny_corpus / "candidates"])
    assert both.num_rows == 12


def test_candidate_folder_with_scorecard(tmp_path: Path) -> None:
    folder = tmp_path / "cand"
    folder.mkdir()
    (folder / "candidate.json").write_text(json.dumps({
        "candidate_id": "x1", "model_version": "ranker@3", "experiment": "exp-9",
        "split_fingerprint": "abc", "variant": "treatment"}))
    (folder / "scorecard.json").write_text(json.dumps({"kind": "experiment_scorecard",
        "results": [{"metric": "ctr", "variant": "treatment", "rel_effect": 0.02,
                     "rel_ci_low": 0.0, "rel_ci_high": 0.04, "p_value": 0.05,
                     "control_mean": 0.1}]}))
    t = build_history(results=[folder])
    row = t.to_pylist()[0]
    assert row["model_version"] == "ranker@3"
    assert row["online_ctr_estimate"] == 0.02
    assert row["online_ctr_se"] == pytest.approx(0.02 / 1.959963984540054)


def test_show(tiny_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["history", "show", str(tiny_corpus / "history.parquet")]) == 0
    assert "12 candidates" in capsys.readouterr().out
    assert run(["history", "show", str(tiny_corpus / "history.parquet"), "--sql",
                "SELECT COUNT(*) AS n FROM history WHERE true_clicks > 0"]) == 0
    n = int((pq.read_table(tiny_corpus / "history.parquet").column("true_clicks")
             .to_numpy() > 0).sum())
    out = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert out[-1].split() == [str(n)]  # the one cell under the header


# ---------------------------------------------------------------------- bad input
def _write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def test_history_without_online_results(tiny_corpus: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    t = pq.read_table(tiny_corpus / "history.parquet")
    keep = [c for c in t.column_names if not c.startswith("online_")]
    bad = _write(t.select(keep), tmp_path / "no-online.parquet")
    out = tmp_path / "p.json"
    rc = run(["history", "predict", str(tiny_corpus / "candidates" / "c00-0000.json"),
              "--history", str(bad), "--json", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "no-online.parquet" in err and "no online results" in err
    assert not out.exists()
    with pytest.raises(DataValidationError, match="no online results"):
        check_history(t.select(keep))


def test_history_with_different_splits(tiny_corpus: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    t = pq.read_table(tiny_corpus / "history.parquet")
    fp = t.column("split_fingerprint").to_pylist()
    fp[3] = "0000000000000000"
    i = t.column_names.index("split_fingerprint")
    bad = _write(t.set_column(i, "split_fingerprint", pa.array(fp)), tmp_path / "mixed.parquet")
    rc = run(["history", "priors", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "mixed.parquet" in err and "different splits" in err and "c00-0003" in err


def test_candidate_from_another_split(tiny_corpus: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    rec = json.loads((tiny_corpus / "candidates" / "c00-0001.json").read_text())
    rec["split_fingerprint"] = "ffffffffffffffff"
    cand = tmp_path / "cand.json"
    cand.write_text(json.dumps(rec))
    rc = run(["history", "predict", str(cand), "--history",
              str(tiny_corpus / "history.parquet")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "cand.json" in err and "split" in err


def test_build_refuses_empty_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "h.parquet"
    rc = run(["history", "build", "--results", str(tmp_path / "empty"), "--out", str(out)])
    assert rc == 2 and "no history candidates" in capsys.readouterr().err
    assert not out.exists()


def test_demo_corpus_cache_is_reused_only_with_its_key(tiny_corpus: Path,
                                                      tmp_path: Path) -> None:
    """The demo's history/ folder is reused when its key matches; a stale or broken one
    is rebuilt (never trusted)."""
    import json
    import shutil

    from recscope.history.demo import _read_cached

    folder = tmp_path / "history"
    folder.mkdir()
    shutil.copy(tiny_corpus / "history.parquet", folder / "history.parquet")
    (folder / "corpus.json").write_text(json.dumps({"key": "abc"}))
    assert _read_cached(folder, "abc").num_rows == 12
    assert _read_cached(folder, "other") is None
    (folder / "history.parquet").write_bytes(b"not parquet")
    assert _read_cached(folder, "abc") is None
    (folder / "corpus.json").write_text("[1, 2")
    assert _read_cached(folder, "abc") is None
    assert _read_cached(tmp_path / "missing", "abc") is None


def test_shipped_demo_corpus() -> None:
    """The corpus shipped for the default demo: a valid history with its key, without the
    families of the demo's own changes (`python benchmarks/history.py demo-corpus`)."""
    import json

    from recscope.history.demo import _read_cached, shipped_folder
    from recscope.history.store import read_history

    folder = shipped_folder("default", 0)
    meta = json.loads((folder / "corpus.json").read_text())
    table = _read_cached(folder, meta["key"])
    assert table is not None and table.num_rows == read_history(
        folder / "history.parquet").num_rows == meta["config"]["n"]
    fams = set(table.column("family").to_pylist())
    assert not fams & {"als/als/none", "popularity/bpr/none", "als/bpr/none"}
    assert meta["baseline"]["family"] == "popularity/als/none"
