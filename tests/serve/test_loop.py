"""The loop end to end: simulator → service over HTTP (in-process uvicorn on a free
loopback port) → the service's logs → experiment analysis; the estimate from the
service's own logs covers the simulator's ground truth for the same change, and the
logs lose nothing the simulator saw."""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import uvicorn

from recscope.experiments.analysis import analyze
from recscope.experiments.metrics import parse_metrics
from recscope.pipeline import Pipeline
from recscope.serve.adapter import METRICS_TOML, experiment_tables
from recscope.serve.app import Settings, create_app
from recscope.serve.config import ExperimentConfig
from recscope.serve.logs import read_log
from recscope.sim.experiment_config import parse_experiment
from recscope.sim.traffic import LOOP_METRICS, drive
from recscope.sim.world_source import world_log
from tests.serve.conftest import API_KEY, free_port, save_model_dir

SPEC = {"name": "loop", "seed": 11, "days": 3, "warmup_days": 2,
        "world": {"scale": 0.05, "seed": 5},
        "simulation": {"sessions_per_day": 1.0},
        "experiment": [{"name": "ranker", "variants": {"control": {}, "treatment": {}}}]}


class InProcessServer:
    """uvicorn serving an app on a thread, stopped (and its log flushed) on exit."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    spec = parse_experiment(SPEC)
    root = tmp_path_factory.mktemp("loop")
    train = world_log(spec.world)
    models = {}
    for name, comp in (("control", "popularity"), ("treatment", "ease")):
        pipe = Pipeline({"name": comp, "retrievers": [{"component": comp, "quota": 50}]})
        models[name] = save_model_dir(pipe.fit(train), train, root / name)
    cfg = ExperimentConfig.model_validate({
        "name": "ranker-loop", "max_k": 50,
        "arms": {"control": {}, "treatment": {"model": str(models["treatment"])}}})
    settings = Settings(model=str(models["control"]), log_dir=str(root / "logs"),
                        experiment=cfg, api_key=API_KEY, flush_seconds=0.2)
    with InProcessServer(create_app(settings)) as url:
        result, stats = drive(spec, url, root / "sim", api_key=API_KEY, concurrency=4)
    yield {"result": result, "stats": stats, "logs": root / "logs"}


def test_the_logs_lose_nothing(loop: dict) -> None:
    stats, result = loop["stats"], loop["result"]
    assert stats["requests"] > 1000 and stats["arm_mismatches"] == 0
    assert stats["unanswered_requests"] == 0
    exposures = read_log(loop["logs"], "exposures")
    assert exposures.num_rows == stats["items_returned"]  # rows logged = items returned
    feedback = read_log(loop["logs"], "feedback")
    for event in ("click", "save", "hide"):
        logged = pc.sum(pc.equal(feedback.column("event"), event)).as_py()
        assert logged == stats["feedback"][event] > 0
    # per unit, the service's clicks are the simulator's clicks
    assignments, events = experiment_tables(loop["logs"])
    served = dict(zip(*[events.group_by("unit_id").aggregate([("clicks", "sum")]).column(c)
                        .to_pylist() for c in ("unit_id", "clicks_sum")], strict=True))
    sim_events = result.events
    sim = dict(zip(*[sim_events.group_by("unit_id").aggregate([("clicks", "sum")]).column(c)
                     .to_pylist() for c in ("unit_id", "clicks_sum")], strict=True))
    assert served == {u: c for u, c in sim.items() if u in served}
    assert set(assignments.column("unit_id").to_pylist()) == set(
        result.assignments.column("unit_id").to_pylist())
    sim_arm = dict(zip(result.assignments.column("unit_id").to_pylist(),
                       result.assignments.column("variant").to_pylist(), strict=True))
    assert all(sim_arm[u] == v for u, v in zip(assignments.column("unit_id").to_pylist(),
                                               assignments.column("variant").to_pylist(),
                                               strict=True))


def test_the_estimate_from_the_service_logs_covers_the_truth(loop: dict) -> None:
    assignments, events = experiment_tables(loop["logs"])
    card = analyze(assignments, events, parse_metrics(tomllib.loads(METRICS_TOML)))
    rows = {e.metric: e for e in card.effects() if e.extra.get("variant") == "treatment"}
    truth = loop["result"].truth
    covered = []
    for metric in ("clicks", "saves", "requests"):
        true = truth.true_effects(metric)["treatment"]["effect"]
        est = rows[metric]
        assert np.isfinite(est.estimate) and np.isfinite(true)
        covered.append(est.ci_low <= true <= est.ci_high)
    assert all(covered), (rows, truth.to_dict()["effects"])
    # the change is real and the logs see it: clicks per unit differ from control
    assert truth.true_effects("clicks")["treatment"]["effect"] != 0


def test_loop_metrics_are_defined_alike() -> None:
    loop_metrics = {m.name for m in parse_metrics(tomllib.loads(LOOP_METRICS)).metrics}
    served = {m.name for m in parse_metrics(tomllib.loads(METRICS_TOML)).metrics}
    assert loop_metrics - {"ctr"} <= served


def test_drive_refuses_a_file_that_names_other_arms(ab_settings: Settings,
                                                    tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recscope.cli.serve import app

    exp = tmp_path / "exp.toml"
    exp.write_text('name = "x"\n[world]\nscale = 0.05\n[[experiment]]\nname = "r"\n'
                   '[experiment.variants.control]\n[experiment.variants.other]\n')
    with InProcessServer(create_app(ab_settings)) as url:
        r = CliRunner().invoke(app, ["drive", str(exp), "--url", url, "--out",
                                     str(tmp_path / "o")])
    assert r.exit_code != 0
    assert "the service serves arms ['control', 'treatment'] but the file names variants " \
           "['control', 'other']" in str(r.exception)
    assert not (tmp_path / "o").exists()
