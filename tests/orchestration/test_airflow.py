"""Airflow for real: the generated DAG loads in a DagBag and runs with `airflow dags test`.

Airflow lives in its own virtual environment (``make airflow`` -> ``.venv-airflow``, the
``airflow`` extra pinned by src/recscope/orchestration/airflow_constraints.txt). Its tasks
run the project's ``recscope`` (this interpreter) through the same workflow runner. In CI
(``RECSCOPE_REQUIRE_DATA=1``) a missing Airflow environment is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recscope.data.loaders import load
from recscope.orchestration import registry as reg
from tests.conftest import data_path
from tests.orchestration.helpers import ALS_PIPELINE, cli

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = Path(os.environ.get("RECSCOPE_AIRFLOW_VENV", ROOT / ".venv-airflow")) / "bin"

WORKFLOW = """name = "airflow-e2e"
schedule = "@daily"
retries = 0
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
name = "register"
op = "register"
inputs = {{ model = "train" }}
params = {{ registry = "airflow-e2e" }}
"""


def _airflow() -> Path:
    exe = AIRFLOW / "airflow"
    if not exe.exists():
        msg = f"Airflow is not installed at {exe.parent.parent} (run `make airflow`)"
        if os.environ.get("RECSCOPE_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


@pytest.mark.slow
def test_dag_loads_and_runs_end_to_end(tmp_path: Path) -> None:
    exe = _airflow()
    # small data: the first 300 users of ML-100K, as Parquet
    table = load(data_path("ml-100k")).table
    small = table.filter(table.column("user_id").to_numpy() <= 300)
    pq.write_table(small.select(["user_id", "item_id", "timestamp", "event", "value"]),
                   tmp_path / "small.parquet")
    (tmp_path / "als.toml").write_text(ALS_PIPELINE)
    wf = tmp_path / "wf.toml"
    wf.write_text(WORKFLOW.format(data=tmp_path / "small.parquet"))
    dags = tmp_path / "dags"
    rc, _o, err = cli("workflow", "airflow", wf, "--out", dags, "--python", sys.executable)
    assert rc == 0, err
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120", "PYTHONPATH": ""}
    env.pop("MLFLOW_TRACKING_URI", None)
    probe = ("import json; from airflow.models import DagBag; "
             f"b = DagBag(dag_folder={str(dags)!r}, include_examples=False); "
             "print(json.dumps({'errors': {k: str(v) for k, v in b.import_errors.items()}, "
             "'dags': sorted(b.dags), 'tasks': sorted(t.task_id for d in b.dags.values() "
             "for t in d.tasks)}))")
    bag = subprocess.run([str(AIRFLOW / "python"), "-c", probe], env=env, capture_output=True,
                         text=True, timeout=300)
    assert bag.returncode == 0, bag.stderr[-2000:]
    doc = json.loads(bag.stdout.strip().splitlines()[-1])
    assert doc["errors"] == {} and doc["dags"] == ["recscope_airflow-e2e"]
    assert doc["tasks"] == ["data", "register", "split", "train"]
    mig = subprocess.run([str(exe), "db", "migrate"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert mig.returncode == 0, mig.stderr[-2000:]
    test = subprocess.run([str(exe), "dags", "test", "recscope_airflow-e2e"], env=env,
                          capture_output=True, text=True, timeout=600)
    out = test.stdout + test.stderr
    assert test.returncode == 0, out[-3000:]
    assert "state=success" in out, out[-3000:]
    for task in ("data", "split", "train", "register"):
        assert (tmp_path / "work" / "tasks" / task / "done.json").exists(), task
    # the registry holds the new version: the first one is challenger and champion
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    rows = reg.versions(uri, "airflow-e2e")
    assert [r["version"] for r in rows] == ["1"] and rows[0]["aliases"] == ["challenger", "champion"]
    assert rows[0]["tags"]["recscope.lineage.workflow"] == "airflow-e2e"
