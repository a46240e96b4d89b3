"""``recscope evaluate``: the CLI contract on ML-100K and on malformed inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import data_path
from tests.offline.ml100k import write_ml100k_case


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from recscope.cli import main

    monkeypatch.setattr(sys, "argv", ["recscope", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_ml100k_case(tmp_path_factory.mktemp("ml100k"), data_path("ml-100k"))


METRICS = ["ndcg@10", "recall@20", "precision@10", "hit_rate@10", "mrr", "map@100", "auc"]


def test_ml100k_popularity_vs_random(ml100k: dict[str, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_html = tmp_path / "eval.json", tmp_path / "eval.html"
    args = ["evaluate", "--rankings", str(ml100k["popularity"]), "--truth", str(ml100k["truth"]),
            "--compare", str(ml100k["random"]), "--json", str(out_json), "--html",
            str(out_html), "--bootstrap", "500"]
    for m in METRICS:
        args += ["--metric", m]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    # the JSON is the ComparisonResult's own to_dict (one shape), and reloads as it
    from recscope.offline import ComparisonResult

    assert doc["kind"] == "comparison" and doc["baseline"] == "popularity"
    assert ComparisonResult.from_dict(doc).to_dict() == doc
    pop = {e["metric"]: e for e in doc["systems"]["popularity"]["estimates"]}
    rnd = {e["metric"]: e for e in doc["systems"]["random"]["estimates"]}
    tests = {t["metric"]: t for t in doc["tests"]}
    assert doc["systems"]["popularity"]["n_users"] > 200
    for m in METRICS:
        entry = pop[m]
        assert entry["ci_low"] <= entry["estimate"] <= entry["ci_high"], m
        assert entry["ci_high"] - entry["ci_low"] > 0 and entry["se"] > 0, m
        assert m in out  # printed in the Rich table
        # popularity beats random on a temporal split, clearly, after Holm adjustment
        t = tests[m]
        assert t["system"] == "random" and rnd[m]["estimate"] < entry["estimate"], m
        assert t["estimate"] == pytest.approx(rnd[m]["estimate"] - entry["estimate"])
        assert t["p_value"] <= t["p_value_adjusted"] < 1e-6, m
        assert t["ci_high"] < 0
    # random ranking's AUC is near 0.5, popularity's well above it
    assert abs(rnd["auc"]["estimate"] - 0.5) < 0.03
    assert pop["auc"]["estimate"] > 0.6
    html = out_html.read_text()
    assert "System random" in html and "p_value_adjusted" in html and "ndcg@10" in html
    # the run is logged to tracking with the metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("recscope").experiment_id],
                              "tags.`recscope.command` = 'evaluate'")
    logged = [r for r in runs if abs(r.data.metrics.get("ndcg_10", -1) - pop["ndcg@10"]["estimate"])
              < 1e-12]
    assert logged and logged[0].info.status == "FINISHED"


def _write(path: Path, cols: dict[str, list[object]]) -> Path:
    table = pa.table(cols)
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


@pytest.fixture
def small(tmp_path: Path) -> dict[str, Path]:
    truth = _write(tmp_path / "truth.csv", {"user_id": ["a", "a", "b", "c"],
                                            "item_id": ["x", "y", "x", "z"],
                                            "cohort": ["new", "new", "old", "old"]})
    ranks = _write(tmp_path / "ranks.csv", {"user_id": ["a", "a", "b", "b", "c", "d"],
                                            "item_id": ["y", "z", "z", "x", "z", "x"],
                                            "rank": [1, 2, 1, 2, 1, 1]})
    return {"truth": truth, "ranks": ranks, "dir": tmp_path}


def test_small_csv_rank_input_slices_and_reported_policy(
        small: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = small["dir"] / "o.json"
    per_user = small["dir"] / "per_user.parquet"
    code, text, err = run_cli(["evaluate", "--rankings", str(small["ranks"]), "--truth",
                               str(small["truth"]), "--metric", "recall@1", "--metric", "mrr",
                               "--slice", "cohort", "--json", str(out), "--per-user",
                               str(per_user)], monkeypatch, capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["kind"] == "evaluation" and doc["system"] == "ranks"
    est = {e["metric"]: e for e in doc["estimates"]}
    # a: y at rank 1 (1 of 2 relevant); b: x at rank 2; c: z at rank 1; d has no truth
    assert est["recall@1"]["estimate"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert est["mrr"]["estimate"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert est["mrr"]["n"] == 3 and doc["n_users"] == 3
    assert doc["info"]["users_not_in_truth"] == 1
    assert "not in the truth" in text
    sl = {(r["slice"], r["metric"]): r for r in doc["slices"]}
    assert sl[("new", "mrr")]["n"] == 1 and sl[("new", "mrr")]["by"] == "cohort"
    assert sl[("old", "mrr")]["estimate"] == pytest.approx(0.75)
    table = pq.read_table(per_user).to_pydict()
    mrr = dict(zip(table["user_id"], table["mrr"], strict=True))
    assert mrr["a"] == 1.0 and mrr["b"] == 0.5 and np.isnan(mrr["d"])


@pytest.mark.parametrize(("ranks", "message"), [
    ({"user_id": ["a"], "item_id": ["x"]}, "score' or a 'rank"),
    ({"user_id": ["a", "a"], "item_id": ["x", "x"], "score": [1.0, 0.5]}, "appears twice"),
    ({"user_id": ["a", "a"], "item_id": ["x", "y"], "score": [1.0, float("nan")]}, "NaN"),
    ({"user_id": ["a", "a"], "item_id": ["x", "y"], "rank": [1, 1]}, "rank repeated"),
    ({"item_id": ["x"], "score": [1.0]}, "missing required column"),
])
def test_malformed_rankings_give_one_line_error(
        small: dict[str, Path], ranks: dict[str, list[object]], message: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(small["dir"] / "bad.parquet", ranks)
    out = small["dir"] / "never.json"
    code, _, err = run_cli(["evaluate", "--rankings", str(bad), "--truth", str(small["truth"]),
                            "--json", str(out)], monkeypatch, capsys)
    assert code == 2
    assert message in err and "bad.parquet" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_user_policy_error(small: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    ranks = _write(small["dir"] / "only_a.csv", {"user_id": ["a"], "item_id": ["x"],
                                                 "score": [1.0]})
    code, _, err = run_cli(["evaluate", "--rankings", str(ranks), "--truth", str(small["truth"]),
                            "--missing", "error"], monkeypatch, capsys)
    assert code == 2 and "no ranked list" in err
    code, out, err = run_cli(["evaluate", "--rankings", str(ranks), "--truth",
                              str(small["truth"]), "--metric", "hit_rate@1"], monkeypatch, capsys)
    assert code == 0 and "score 0" in out


def test_score_and_rank_inputs_agree(tmp_path: Path) -> None:
    from recscope.offline import evaluate
    from recscope.offline.inputs import load_inputs

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 8)
    items = np.concatenate([rng.permutation(40)[:8] for _ in range(30)])
    score = rng.random(len(users))
    rank = np.empty(len(users), dtype=np.int64)
    for u in range(30):
        sl = slice(8 * u, 8 * u + 8)
        rank[sl] = np.argsort(np.argsort(-score[sl])) + 1
    _write(tmp_path / "s.parquet", {"user_id": users, "item_id": items, "score": score})
    _write(tmp_path / "r.parquet", {"user_id": users, "item_id": items, "rank": rank})
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 30, 90), rng.integers(0, 40, 90),
                                               strict=True)}
    tu, ti = zip(*sorted(pairs), strict=True)
    _write(tmp_path / "t.parquet", {"user_id": list(tu), "item_id": list(ti)})
    data = load_inputs(tmp_path / "t.parquet", {"s": tmp_path / "s.parquet",
                                                "r": tmp_path / "r.parquet"})
    a = evaluate(data.rankings["s"], data.truth, ["ndcg@5", "map"], bootstrap=0)
    b = evaluate(data.rankings["r"], data.truth, ["ndcg@5", "map"], bootstrap=0)
    assert a.mean("ndcg@5") == b.mean("ndcg@5") and a.mean("map") == b.mean("map")


def test_exclude_seen_items(small: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    seen = _write(small["dir"] / "seen.csv", {"user_id": ["a", "zz"], "item_id": ["y", "x"]})
    out = small["dir"] / "ex.json"
    code, _, err = run_cli(["evaluate", "--rankings", str(small["ranks"]), "--truth",
                            str(small["truth"]), "--exclude", str(seen), "--metric", "mrr",
                            "--json", str(out)], monkeypatch, capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    # user a: y is seen, so it leaves both the list and the truth; a's list is [z], truth {x}
    assert doc["estimates"][0]["metric"] == "mrr"
    assert doc["estimates"][0]["estimate"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert doc["info"]["exclude.pairs_used"] == 1


def test_bad_options_fail_before_reading(small: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for extra, message in ((["--metric", "ndgc@10"], "unknown metric"),
                           (["--adjust", "bonf"], "--adjust"),
                           (["--test", "z"], "--test")):
        code, _, err = run_cli(["evaluate", "--rankings", str(small["ranks"]), "--truth",
                                str(small["truth"]), *extra], monkeypatch, capsys)
        assert code == 2 and message in err


def test_from_table_with_own_ids_equals_the_file_path(tmp_path: Path) -> None:
    """``Relevance.from_table`` / ``RankedLists.from_table`` on pandas frames with string
    ids give the same metrics as the file loader; the vocabularies align both."""
    import pandas as pd

    from recscope.data import RankedLists, Relevance
    from recscope.offline import evaluate, load_inputs

    truth = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["x", "y", "x", "z"]})
    recs = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c", "d"],
                         "item_id": ["y", "w", "z", "x", "z", "x"],
                         "score": [0.9, 0.1, 0.8, 0.3, 0.5, 0.2]})
    rel, users, items = Relevance.from_table(truth)
    lists, users2, items2 = RankedLists.from_table(recs, users=users, items=items)
    # ids the truth lacks are appended; indices the truth gave keep their meaning
    assert users2.ids.to_pylist() == ["a", "b", "c", "d"]
    assert items2.ids.to_pylist() == ["x", "y", "z", "w"]
    assert lists.items[0].tolist() == [1, 3]  # a: y (0.9) then w
    got = evaluate(lists, rel, ["ndcg@2", "mrr"], bootstrap=0)
    _write(tmp_path / "t.parquet", {c: truth[c].tolist() for c in truth})
    _write(tmp_path / "r.parquet", {c: recs[c].tolist() for c in recs})
    data = load_inputs(tmp_path / "t.parquet", {"r": tmp_path / "r.parquet"})
    want = evaluate(data.rankings["r"], data.truth, ["ndcg@2", "mrr"], bootstrap=0)
    assert got.mean("ndcg@2") == want.mean("ndcg@2") and got.mean("mrr") == want.mean("mrr")
    # rank columns and Arrow tables work too; bad rows are named
    ranked = pa.table({"uid": ["a", "a"], "iid": ["y", "x"], "pos": [1, 2]})
    rl, _, its = RankedLists.from_table(ranked, user_col="uid", item_col="iid", rank_col="pos")
    assert its.lookup(rl.items[0]).to_pylist() == ["y", "x"]
    from recscope.errors import DataValidationError

    with pytest.raises(DataValidationError, match="row 1"):
        RankedLists.from_table(recs.assign(score=[0.9, np.nan, 0.8, 0.3, 0.5, 0.2]))
    with pytest.raises(DataValidationError, match="repeated in the truth"):
        Relevance.from_table(pd.concat([truth, truth.iloc[:1]]))
    with pytest.raises(DataValidationError, match="score"):
        RankedLists.from_table(recs.drop(columns="score"))


@pytest.mark.parametrize(("setup", "extra", "words"), [
    ("missing", [], ["--rankings", "nope.parquet", "not found"]),
    ("folder", [], ["--rankings", "is a folder"]),
    ("empty", [], ["ranks.parquet", "empty"]),
    ("corrupt", [], ["ranks.parquet", "Parquet"]),
    ("latin1", [], ["ranks.csv", "UTF-8"]),
    ("text-score", [], ["ranks.parquet", "'score'", "expected numbers"]),
    ("inf-score", [], ["ranks.parquet", "'score'", "row 1", "NaN or infinite"]),
    ("ok", ["--bootstrap", "-1"], ["--bootstrap"]),
    ("ok", ["--confidence", "1.5"], ["--confidence"]),
    ("ok", ["--missing", "drop"], ["--missing"]),
    ("ok", ["--seed", "-3"], ["--seed"]),
    ("ok", ["--json", "{dir}"], ["is a folder"]),
    ("ok", ["--json", "{dir}/truth.csv"], ["truth.csv"]),
])
def test_bad_inputs_exit_2_naming_the_problem_and_write_nothing(
        small: dict[str, Path], setup: str, extra: list[str], words: list[str],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    d = small["dir"]
    ranks = d / "ranks.parquet"
    if setup == "missing":
        ranks = d / "nope.parquet"
    elif setup == "folder":
        ranks = d / "folder.parquet"
        ranks.mkdir()
    elif setup == "empty":
        ranks.write_bytes(b"")
    elif setup == "corrupt":
        ranks.write_bytes(b"PAR1 but not really")
    elif setup == "latin1":
        ranks = d / "ranks.csv"
        ranks.write_bytes(b"user_id,item_id,score\na,caf\xe9,1.0\n")
    elif setup == "text-score":
        _write(ranks, {"user_id": ["a", "b"], "item_id": ["x", "y"], "score": ["1", "n/a"]})
    elif setup == "inf-score":
        _write(ranks, {"user_id": ["a", "b"], "item_id": ["x", "y"],
                       "score": [1.0, float("inf")]})
    else:
        ranks = small["ranks"]
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    args = [a.replace("{dir}", str(d)) for a in extra]
    code, _, err = run_cli(["evaluate", "--rankings", str(ranks), "--truth", str(small["truth"]),
                            *args], monkeypatch, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before  # nothing written


def test_help_shows_an_example(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["evaluate"], ["ope"], ["data", "split"], ["data", "describe"]):
        code, out, _ = run_cli([*cmd, "--help"], monkeypatch, capsys)
        assert code == 0 and "Example" in out, cmd


@pytest.mark.parametrize(("truth", "words"), [
    ({"user_id": ["a", "b"], "item_id": ["x", "y"], "grade": ["high", "low"]},
     ["'grade'", "expected numbers"]),
    ({"user_id": ["a", "b"], "item_id": ["x", "y"], "grade": [1.0, float("nan")]},
     ["'grade'", "row 1"]),
    ({"user_id": ["a", "a"], "item_id": ["x", "x"]}, ["repeated in the truth", "row 1"]),
    ({"user_id": ["a", None], "item_id": ["x", "y"]}, ["'user_id'", "null", "row 1"]),
])
def test_bad_truth_is_named(small: dict[str, Path], truth: dict[str, list[object]],
                            words: list[str], monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(small["dir"] / "badtruth.parquet", truth)
    code, _, err = run_cli(["evaluate", "--rankings", str(small["ranks"]), "--truth", str(bad)],
                           monkeypatch, capsys)
    assert code == 2 and "badtruth.parquet" in err and all(w in err for w in words), err
