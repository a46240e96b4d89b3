"""``recscope ope`` on the Open Bandit sample: JSON contract, on_policy, errors, tracking;
the result's JSON/HTML round trip; validation against the on-policy click rate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import typer
from typer.testing import CliRunner

from recscope.cli.ope import ope
from recscope.errors import RecscopeError
from recscope.ope.result import OPEResult
from tests.conftest import data_path, make_log

app = typer.Typer()
app.command()(ope)


def run(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, RecscopeError):
        return 2, result.output, result.exception
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output, None


@pytest.mark.data
def test_bts_from_random_log_json_contract(tmp_path: Path) -> None:
    random_men = data_path("obd", "random", "men")
    bts_men = data_path("obd", "bts", "men")
    out = tmp_path / "ope.json"
    code, output, _ = run("--logs", str(random_men), "--policy", f"log:{bts_men}",
                          "-e", "ips", "-e", "snips", "-e", "dr", "--bootstrap", "60",
                          "--json", str(out), "--html", str(tmp_path / "ope.html"))
    assert code == 0, output
    data = json.loads(out.read_text())
    assert data["on_policy"] == pytest.approx(69 / 10000)  # BTS click rate, men campaign
    assert data["kind"] == "ope"
    ests = {e["estimator"]: e for e in data["estimates"]}
    assert set(ests) == {"ips", "snips", "dr"}
    for name, est in ests.items():
        assert est["metric"] == "policy_value" and est["n"] == 10000
        assert est["ci_low"] <= est["estimate"] <= est["ci_high"] and est["se"] > 0, name
        assert est["rel_error"] == pytest.approx(abs(est["estimate"] - data["on_policy"])
                                                 / data["on_policy"])
        assert {"ess", "weight_max", "outside_support_share"} <= set(est["diagnostics"])
        # the estimate lands near the on-policy truth (well within the sample's noise)
        assert abs(est["estimate"] - data["on_policy"]) / data["on_policy"] < 0.5, name
    assert data["policy_info"]["method"] == "harmonic"
    assert data["reward_model"]["kind"] == "logistic"
    assert (tmp_path / "ope.html").read_text().startswith("<!DOCTYPE html>")
    again = OPEResult.load(out)
    assert again.to_dict() == OPEResult.from_dict(data).to_dict()


def test_uniform_policy_on_canonical_log(tmp_path: Path) -> None:
    """A uniform logger evaluated against itself: IPS weights are all 1, so IPS is the
    logged mean reward exactly and nothing lies outside the support."""
    table = make_log(n_users=30, n_items=10, n_rows=400, extra=True, seed=3)
    items = table.column("item_id").to_numpy()
    n_items = len(np.unique(items))
    table = table.set_column(table.column_names.index("propensity"), "propensity",
                             pa.array(np.full(len(items), 1.0 / n_items)))
    log = tmp_path / "log.csv"
    pacsv.write_csv(table, log)
    out = tmp_path / "u.json"
    code, output, _ = run("--logs", str(log), "--policy", "uniform", "-e", "ips",
                          "-e", "clipped-ips:5", "--bootstrap", "30", "--json", str(out))
    assert code == 0, output
    data = json.loads(out.read_text())
    mean = float(table.column("value").to_numpy().mean())
    ips = next(e for e in data["estimates"] if e["estimator"] == "ips")
    assert ips["estimate"] == pytest.approx(mean, rel=1e-12)
    assert ips["diagnostics"]["outside_support_rounds"] == 0
    assert data["on_policy"] is None and "rel_error" not in ips


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    table = make_log(n_rows=50, extra=True)
    prop = table.column("propensity").to_numpy().copy()
    prop[7] = 0.0
    table = table.set_column(table.column_names.index("propensity"), "propensity",
                             pa.array(prop))
    log = tmp_path / "bad.csv"
    pacsv.write_csv(table, log)
    code, _, exc = run("--logs", str(log), "--policy", "uniform", "--json",
                       str(tmp_path / "x.json"))
    assert code == 2 and "propensity" in str(exc) and "row 7" in str(exc)
    assert not (tmp_path / "x.json").exists()
    code, _, exc = run("--logs", str(log), "--policy", "nowhere")
    assert code == 2 and "--policy" in str(exc)
    code, _, exc = run("--logs", str(log), "--policy", "uniform", "-e", "bogus")
    assert code == 2 and "unknown estimator" in str(exc)


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--confidence", "2", "--confidence"), ("--confidence", "0", "--confidence"),
    ("--bootstrap", "-1", "--bootstrap"), ("--n-folds", "1", "--n-folds"),
    ("--epsilon", "1.5", "--epsilon"), ("--temperature", "0", "--temperature"),
    ("--log-method", "magic", "--log-method"), ("--reward-model", "svm", "--reward-model"),
    ("--policy-kind", "greedy", "--policy-kind"), ("--seed", "-1", "--seed"),
])
def test_out_of_range_options_are_named_before_any_work(tmp_path: Path, option: str,
                                                        value: str, named: str) -> None:
    log = tmp_path / "log.csv"
    pacsv.write_csv(make_log(n_rows=50, extra=True), log)
    out = tmp_path / "x.json"
    code, _, exc = run("--logs", str(log), "--policy", "uniform", option, value,
                       "--json", str(out))
    assert code == 2 and named in str(exc), exc
    assert not out.exists()


def test_missing_logs_and_policy_log_are_named(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    pacsv.write_csv(make_log(n_rows=50, extra=True), log)
    code, _, exc = run("--logs", str(tmp_path / "nope.csv"), "--policy", "uniform")
    assert code == 2 and "nope.csv" in str(exc) and "--logs" in str(exc)
    code, _, exc = run("--logs", str(log), "--policy", f"log:{tmp_path / 'gone'}")
    assert code == 2 and "gone" in str(exc)


def test_registered_in_main_cli(tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    res = subprocess.run([sys.executable, "-c", "import sys; sys.argv=['recscope','ope',"
                          "'--help']; from recscope.cli import main; main()"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "--policy" in res.stdout


@pytest.mark.parametrize(("name", "content", "words"), [
    ("empty.csv", b"", ["empty.csv", "empty"]),
    ("corrupt.parquet", b"PAR1 not really", ["corrupt.parquet", "Parquet"]),
    ("latin1.csv", b"user_id,item_id,timestamp,event,value,position,propensity\n"
                   b"u,caf\xe9,1,click,1,0,0.5\n", ["latin1.csv", "UTF-8"]),
    ("text.csv", b"user_id,item_id,timestamp,event,value,position,propensity\n"
                 b"u,i,1,click,1,0,n/a\n", ["text.csv", "'propensity'"]),
    ("nan.csv", b"user_id,item_id,timestamp,event,value,position,propensity\n"
                b"u,i,1,click,1,0,0.5\nu,j,2,click,nan,0,0.5\n", ["nan.csv", "'value'", "row 1"]),
])
def test_unreadable_logs_are_named_and_nothing_is_written(tmp_path: Path, name: str,
                                                          content: bytes,
                                                          words: list[str]) -> None:
    log = tmp_path / name
    log.write_bytes(content)
    out = tmp_path / "x.json"
    code, _, exc = run("--logs", str(log), "--policy", "uniform", "--json", str(out))
    assert code == 2 and all(w in str(exc) for w in words), exc
    assert "\n" not in str(exc)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
