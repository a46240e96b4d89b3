"""Workflows: checks with file and key, content keys, skipping, retries, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recscope.errors import ConfigError, RecscopeError
from recscope.orchestration import tasks as ops
from recscope.orchestration.workflow import check_configs, load_workflow, run, status
from tests.conftest import data_path
from tests.orchestration.helpers import ALS_PIPELINE, cli, one_error_line, snapshot

ROOT = Path(__file__).resolve().parents[2]


def workflow_text(data: Path, *, iterations: int = 4, extra: str = "") -> str:
    return f"""name = "wf-test"
retries = 0
retry_delay_seconds = 0
workdir = "work"
tracking = "store"

[[tasks]]
name = "data"
op = "load"
params = {{ path = "{data}" }}

[[tasks]]
name = "split"
op = "split"
inputs = {{ data = "data" }}
params = {{ test_fraction = 0.2, seed = 0 }}

[[tasks]]
name = "train"
op = "train"
inputs = {{ data = "split.train" }}
params = {{ config = "als.toml" }}

[[tasks]]
name = "evaluate"
op = "evaluate"
inputs = {{ model = "train", test = "split.test" }}
params = {{ metrics = ["ndcg@10", "recall@20"] }}
{extra}"""


def make(tmp: Path, *, iterations: int = 4, extra: str = "") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "als.toml").write_text(ALS_PIPELINE.replace("iterations = 4",
                                                       f"iterations = {iterations}"))
    wf = tmp / "wf.toml"
    wf.write_text(workflow_text(data_path("ml-100k"), iterations=iterations, extra=extra))
    return wf


def outputs(workdir: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(workdir / "tasks").items() if not k.startswith(".")}


def test_rerun_skips_and_changes_rerun_downstream(tmp_path: Path) -> None:
    wf_file = make(tmp_path)
    first = run(load_workflow(wf_file))
    assert [o.status for o in first] == ["done"] * 4
    before = outputs(tmp_path / "work")
    again = run(load_workflow(wf_file))
    assert [o.status for o in again] == ["skipped"] * 4
    assert outputs(tmp_path / "work") == before
    # a changed pipeline file re-runs train and evaluate only
    (tmp_path / "als.toml").write_text(ALS_PIPELINE.replace("factors = 16", "factors = 8"))
    third = run(load_workflow(wf_file))
    assert [o.status for o in third] == ["skipped", "skipped", "done", "done"]
    rows = status(load_workflow(wf_file))
    assert {r["state"] for r in rows} == {"done"}
    logs = (tmp_path / "work" / "logs" / "train.log").read_text()
    assert logs.count("start attempt 1") == 2 and "done in" in logs


def test_retries_then_success_and_failure_names_task(tmp_path: Path, monkeypatch: Any
                                                     ) -> None:
    wf = load_workflow(make(tmp_path))
    real = ops.OPS["evaluate"]
    calls = {"n": 0}

    def flaky(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient failure")
        return real(*args)

    monkeypatch.setitem(ops.OPS, "evaluate", flaky)
    out = run(wf, retries=1)
    assert out[-1].status == "done" and out[-1].attempts == 2
    log = (tmp_path / "work" / "logs" / "evaluate.log").read_text()
    assert "transient failure" in log and "start attempt 2 of 2" in log

    def broken(*_a: Any) -> Any:
        raise RuntimeError("always broken")

    monkeypatch.setitem(ops.OPS, "train", broken)
    (tmp_path / "als.toml").write_text(ALS_PIPELINE.replace("factors = 16", "factors = 12"))
    with pytest.raises(RecscopeError, match=r"task 'train' failed after 2 attempt"):
        run(load_workflow(tmp_path / "wf.toml"), retries=1)
    assert not (tmp_path / "work" / "tasks" / "train" / "done.json").exists() or \
        "factors" not in (tmp_path / "work" / "tasks" / "train" / "done.json").read_text()


CYCLE = """
[[tasks]]
name = "a"
op = "split"
inputs = { data = "b.train" }

[[tasks]]
name = "b"
op = "split"
inputs = { data = "a.train" }
"""

@pytest.mark.parametrize(("extra", "key", "words"), [
    (CYCLE, "tasks.4.inputs", "cycle"),
    ('\n[[tasks]]\nname = "x"\nop = "evaluate"\ninputs = { model = "nope", test = "split.test" }\n',
     "tasks.4.inputs.model", "names no task"),
    ('\n[[tasks]]\nname = "x"\nop = "evaluate"\ninputs = { test = "split.test" }\n',
     "tasks.4.inputs.model", "needs input"),
    ('\n[[tasks]]\nname = "x"\nop = "evaluate"\ninputs = { model = "split.train", test = "split.test" }\n',
     "tasks.4.inputs.model", "expects model"),
    ('\n[[tasks]]\nname = "x"\nop = "train"\ninputs = { data = "data" }\nparams = { config = "missing.toml" }\n',
     "tasks.4.params.config", "not found"),
    ('\n[[tasks]]\nname = "x"\nop = "evaluate"\ninputs = { model = "train", test = "split.test" }\nparams = { metrics = ["ndcg@x"] }\n',
     "tasks.4.params.metrics", ""),
    ('\n[[tasks]]\nname = "x"\nop = "evaluate"\ninputs = { model = "train", test = "split.test" }\nparams = { colour = 1 }\n',
     "tasks.4.params.colour", ""),
    ('\n[[tasks]]\nname = "x"\nop = "explode"\n', "tasks.4.op", ""),
])
def test_bad_workflows_exit_2_naming_file_and_key(tmp_path: Path, extra: str, key: str,
                                                  words: str) -> None:
    wf_file = make(tmp_path, extra=extra)
    with pytest.raises(ConfigError) as exc:
        check_configs(load_workflow(wf_file))
    assert key in str(exc.value) and words in str(exc.value), str(exc.value)
    before = snapshot(tmp_path)
    for command in ("run", "airflow"):
        extra_args = ["--out", str(tmp_path / "dags")] if command == "airflow" else []
        rc, _o, err = cli("workflow", command, wf_file, *extra_args)
        line = one_error_line(err)
        assert rc == 2 and key in line and "wf.toml" in line, line
    assert snapshot(tmp_path) == before and not (tmp_path / "work").exists()
    assert not (tmp_path / "dags").exists()


def test_single_task_needs_its_inputs(tmp_path: Path) -> None:
    wf = load_workflow(make(tmp_path))
    with pytest.raises(RecscopeError, match="needs 'data'"):
        run(wf, only="split")
    run(wf, only="data")
    out = run(wf, only="split")
    assert [o.name for o in out] == ["split"]


def test_airflow_dag_renders_the_graph(tmp_path: Path) -> None:
    wf_file = make(tmp_path)
    rc, _out, err = cli("workflow", "airflow", wf_file, "--out", tmp_path / "dags")
    assert rc == 0, err
    text = (tmp_path / "dags" / "recscope_wf-test.py").read_text()
    compile(text, "dag.py", "exec")
    assert text.count("BashOperator(task_id=") == 4
    assert "t_split >> t_train" in text and "t_train >> t_evaluate" in text
    assert "--task " in text and sys.executable in text


@pytest.mark.slow
def test_killed_mid_training_resumes_byte_identical(tmp_path: Path) -> None:
    """SIGKILL while the train task runs, run again: the outputs equal a clean run's."""
    clean = make(tmp_path / "clean", iterations=60)
    run(load_workflow(clean))
    killed = make(tmp_path / "killed", iterations=60)
    exe = ROOT / ".venv" / "bin" / "recscope"
    cmd = [str(exe) if exe.exists() else "recscope", "workflow", "run", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    log = tmp_path / "killed" / "work" / "logs" / "train.log"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "start attempt" in log.read_text()):
        time.sleep(0.2)
    time.sleep(1.0)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    work = tmp_path / "killed" / "work"
    assert not (work / "tasks" / "train" / "done.json").exists()
    resumed = run(load_workflow(killed))
    assert [o.status for o in resumed] == ["skipped", "skipped", "done", "done"]
    assert outputs(work) == outputs(tmp_path / "clean" / "work")


def test_tune_task_feeds_evaluate(tmp_path: Path) -> None:
    from tests.orchestration.helpers import ALS_SPACE

    (tmp_path / "space.toml").write_text(ALS_SPACE)
    wf_file = make(tmp_path)
    text = wf_file.read_text().replace(
        'op = "train"\ninputs = { data = "split.train" }\nparams = { config = "als.toml" }',
        'op = "tune"\ninputs = { data = "split.train" }\n'
        'params = { config = "space.toml", trials = 2, pruner = "none" }')
    assert 'op = "tune"' in text
    wf_file.write_text(text)
    out = run(load_workflow(wf_file))
    assert [o.status for o in out] == ["done"] * 4
    tasks = tmp_path / "work" / "tasks"
    assert (tasks / "train" / "model" / "train.json").exists()
    doc = json.loads((tasks / "train" / "tune" / "tune.json").read_text())
    assert len(doc["trials"]) == 2
    assert (tasks / "evaluate" / "eval" / "eval.json").exists()
    assert [o.status for o in run(load_workflow(wf_file))] == ["skipped"] * 4


# ---------------------------------------------------------------------------- OPE gate
def write_log(path: Path, probs: list[float], n: int, seed: int) -> Path:
    """A synthetic logged-feedback CSV: one slot, item i shown with probability probs[i];
    item 0 is clicked at 0.6, the others at 0.1 (so favouring item 0 lifts the value)."""
    rng = np.random.default_rng(seed)
    items = rng.choice(len(probs), size=n, p=probs)
    clicks = rng.random(n) < np.where(items == 0, 0.6, 0.1)
    rows = ["user_id,item_id,timestamp,event,value,position,propensity"]
    rows += [f"u{r},i{items[r]},{r},click,{int(clicks[r])},0,{probs[items[r]]}"
             for r in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def ope_task(name: str = "ope", *, min_lift: float = 0.0, estimator: str = "snips") -> str:
    return f"""
[[tasks]]
name = "{name}"
op = "ope"
params = {{ logs = "logged.csv", policy = "log:target.csv", estimator = "{estimator}", \
min_lift = {min_lift}, bootstrap = 200 }}
"""


def make_logs(tmp: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    write_log(tmp / "logged.csv", [0.25] * 4, 3000, seed=1)   # uniform logging: value 0.225
    write_log(tmp / "target.csv", [0.7, 0.1, 0.1, 0.1], 3000, seed=2)  # value 0.45


def test_ope_gate_passes_and_rerun_skips(tmp_path: Path) -> None:
    make_logs(tmp_path)
    wf_file = tmp_path / "wf.toml"
    wf_file.write_text('name = "ope-test"\nworkdir = "work"\n' + ope_task())
    first = run(load_workflow(wf_file))
    assert [o.status for o in first] == ["done"]
    gate = json.loads((tmp_path / "work/tasks/ope/gate/gate.json").read_text())
    assert gate["passed"] is True and gate["estimator"] == "snips"
    assert 0.1 < gate["lift_low"] <= gate["lift"] < 0.35, gate  # true lift 0.225
    assert gate["lift_low"] == pytest.approx(gate["ci_low"] - gate["logging_value"])
    assert (tmp_path / "work/tasks/ope/gate/ope.json").exists()
    assert "passed" in (tmp_path / "work/logs/ope.log").read_text()
    assert [o.status for o in run(load_workflow(wf_file))] == ["skipped"]
    # a changed policy log changes the key: the gate runs again
    write_log(tmp_path / "target.csv", [0.7, 0.1, 0.1, 0.1], 3000, seed=3)
    assert [o.status for o in run(load_workflow(wf_file))] == ["done"]


def test_failing_ope_gate_blocks_register(tmp_path: Path) -> None:
    make_logs(tmp_path)
    extra = ope_task(min_lift=0.5) + """
[[tasks]]
name = "register"
op = "register"
inputs = { model = "train", gate = "ope" }
params = { registry = "wf-ope" }
"""
    wf_file = make(tmp_path, extra=extra)
    with pytest.raises(RecscopeError) as exc:
        run(load_workflow(wf_file))
    line = str(exc.value)
    assert "\n" not in line and "'register'" in line and "OPE gate 'ope'" in line, line
    assert "min_lift 0.5" in line and "failed" in line and "after 1 attempt" in line, line
    gate = json.loads((tmp_path / "work/tasks/ope/gate/gate.json").read_text())
    assert gate["passed"] is False and gate["lift_low"] < 0.5
    assert f"{gate['lift_low']:+.4g}" in line
    assert not (tmp_path / "work/tasks/register").exists()


@pytest.mark.parametrize(("params", "key", "words"), [
    ('estimator = "magic"', "tasks.0.params.estimator", "unknown estimator"),
    ('estimator = "snips", policy = "log:nope.csv"', "tasks.0.params.policy", "nope.csv"),
    ('min_lift = "big"', "tasks.0.params.min_lift", "wrong type"),
])
def test_bad_ope_config_is_one_line_naming_file_and_key(tmp_path: Path, params: str,
                                                        key: str, words: str) -> None:
    make_logs(tmp_path)
    wf_file = tmp_path / "wf.toml"
    policy = "" if "policy" in params else 'policy = "uniform", '
    wf_file.write_text(f'name = "ope-bad"\nworkdir = "work"\n[[tasks]]\nname = "ope"\n'
                       f'op = "ope"\nparams = {{ logs = "logged.csv", {policy}{params} }}\n')
    with pytest.raises(ConfigError) as exc:
        load_workflow(wf_file)
    assert key in str(exc.value) and words in str(exc.value), str(exc.value)
    rc, _o, err = cli("workflow", "run", wf_file)
    line = one_error_line(err)
    assert rc == 2 and key in line and "wf.toml" in line, line
    assert not (tmp_path / "work").exists()


def test_simulate_a_launch_writes_the_experiment_logs(tmp_path: Path) -> None:
    (tmp_path / "launch.toml").write_text(
        'name = "launch"\nseed = 3\ndays = 5\nwarmup_days = 1\ntruth = false\n'
        '[world]\nscale = 0.02\n[policy]\nretriever = "embedding"\nranker = "affinity"\n'
        '[[experiment]]\nname = "ranker"\n[experiment.variants.control]\n'
        '[experiment.variants.treatment]\nranker = "affinity_quality"\n')
    wf_file = tmp_path / "wf.toml"
    wf_file.write_text('name = "sim-test"\nworkdir = "work"\n[[tasks]]\nname = "launch"\n'
                       'op = "simulate"\nparams = { experiment = "launch.toml", days = 2 }\n')
    assert [o.status for o in run(load_workflow(wf_file))] == ["done"]
    sim = tmp_path / "work/tasks/launch/sim"
    for name in ("assignments.parquet", "events.parquet", "metrics.toml", "summary.json"):
        assert (sim / name).stat().st_size > 0, name
    assert json.loads((sim / "summary.json").read_text())["days"] == 2
    assert [o.status for o in run(load_workflow(wf_file))] == ["skipped"]
