"""The workflow ops: each reads its inputs' folders and writes its outputs into ``out``.

Every op is ``fn(workflow, task, inputs, out, log) -> info``: ``inputs`` maps an input name
to the upstream output folder, ``out`` is the task's temporary output folder (moved into
place when the op returns), ``log`` appends to the task's log. The same functions run under
the local runner and under Airflow (whose tasks call ``recscope workflow run --task``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recscope.errors import ConfigError
from recscope.io import write_json

Log = Callable[[str], None]


def _load_data(path: Path) -> Any:
    from recscope.data.interactions import Interactions

    return Interactions.load(path)


def op_load(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log) -> dict[str, Any]:
    """Read a data set (any format recscope loads) into the canonical folder format."""
    from recscope.data.loaders import load

    data = load(wf.path(t.params["path"]), t.params.get("format", "auto"))
    data.save(out / "data")
    log(f"loaded {len(data)} interactions, {data.n_users} users, {data.n_items} items")
    return {"rows": len(data), "fingerprint": data.fingerprint()}


def op_split(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log) -> dict[str, Any]:
    """Per-user random holdout (``test_fraction``, ``seed``) or a temporal split."""
    from recscope.data.splits import random_holdout, temporal_split_fraction

    data = _load_data(inputs["data"])
    method = t.params.get("method", "random")
    frac = float(t.params.get("test_fraction", 0.2))
    if method == "random":
        split = random_holdout(data, frac, seed=int(t.params.get("seed", 0)))
    elif method == "temporal":
        split = temporal_split_fraction(data, frac)
    else:
        raise ConfigError(f"split method must be random or temporal, got {method!r}",
                          key=f"tasks.{t.name}.params.method", file=str(wf.file))
    split.train.save(out / "train")
    split.test.save(out / "test")
    log(f"train {len(split.train)} rows, test {len(split.test)} rows")
    return {"train": len(split.train), "test": len(split.test)}


def op_train(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log) -> dict[str, Any]:
    """Fit the pipeline TOML ``config`` on ``data``; write a model directory."""
    from recscope.orchestration.model_dir import save_model_dir
    from recscope.pipeline import Pipeline, load_config
    from recscope.tracking import track

    cfg = load_config(wf.path(t.params["config"]))
    data = _load_data(inputs["data"])
    with track("workflow.train", config=cfg, inputs={"data": data.fingerprint()},
               store=wf.tracking, tags={"recscope.workflow": wf.config.name}):
        pipe = Pipeline(cfg).fit(data)
    save_model_dir(out / "model", pipe, data, {"config_file": t.params["config"]})
    log(f"trained {cfg.name} (version {pipe.version})")
    return {"version": pipe.version}


def op_tune(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log) -> dict[str, Any]:
    """Optuna search; the study lives in the workdir's state folder so a killed run resumes."""
    from recscope.orchestration.space import load_space
    from recscope.orchestration.tuning import tune
    from recscope.orchestration.workflow import _tune_settings

    space = load_space(wf.path(t.params["config"]))
    data = _load_data(inputs["data"])
    state = wf.workdir / "state" / t.name
    result = tune(space, data, _tune_settings(t), state, store=wf.tracking, force=True,
                  log=log)
    shutil.copytree(state / "best", out / "model")
    (out / "tune").mkdir()
    shutil.copy2(state / "tune.json", out / "tune" / "tune.json")
    return {"best_params": result.best_params, "best_value": result.best_value}


def _evaluate_dir(model_dir: Path, test_dir: Path, metrics: list[str], k: int) -> Any:
    """Metrics with intervals of a model directory on test interactions (external ids)."""
    from recscope.data.rankings import Relevance
    from recscope.data.vocab import Vocabulary
    from recscope.offline import evaluate
    from recscope.orchestration.model_dir import load_model_dir

    md = load_model_dir(model_dir)
    test = _load_data(test_dir)
    users = Vocabulary(md.user_ids, name="user_id").index(
        test.users.ids.take(test.user_index), missing="ignore")
    items = Vocabulary(md.item_ids, name="item_id").index(
        test.items.ids.take(test.item_index), missing="ignore")
    keep = (users >= 0) & (items >= 0)
    truth = Relevance.from_pairs(users[keep], items[keep], len(md.user_ids), len(md.item_ids))
    who = np.unique(users[keep]).astype(np.int32)
    return evaluate(md.model.recommend(who, k), truth, metrics, seed=0), int((~keep).sum())


def op_evaluate(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log
                ) -> dict[str, Any]:
    """Offline metrics with intervals on the test split (``metrics``, list length ``k``)."""
    from recscope.offline.metrics import parse_metrics

    metrics = list(t.params.get("metrics", ["ndcg@10", "recall@20"]))
    ks = [int(s.k) for s in parse_metrics(metrics) if getattr(s, "k", None)]
    k = int(t.params.get("k", max(ks, default=100)))
    res, dropped = _evaluate_dir(inputs["model"], inputs["test"], metrics, k)
    (out / "eval").mkdir()
    res.save(out / "eval" / "eval.json")
    summary = {m: res.mean(m) for m in metrics}
    log(f"evaluated: {summary}; {dropped} test rows unknown to the model")
    return summary


def op_gate(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log) -> dict[str, Any]:
    """Paired test against the registry's champion (none yet: the gate says so)."""
    from recscope.orchestration import registry as reg
    from recscope.tracking import tracking_uri

    uri = tracking_uri(wf.tracking)
    name = t.params["registry"]
    (out / "gate").mkdir()
    champ = reg.champion(uri, name)
    if champ is None:
        write_json(out / "gate" / "gate.json", {"kind": "recscope.gate/none",
                                                "reason": f"{name} has no champion yet"})
        log(f"{name} has no champion yet: nothing to compare with")
        return {"champion": None}
    base = reg.load_registered(f"models:/{name}@champion", store=wf.tracking)
    g = reg.make_gate(inputs["model"], _load_data(inputs["test"]),
                      baseline_dir=base.path, metric=t.params.get("metric", "ndcg@10"),
                      margin=float(t.params.get("margin", 0.0)),
                      alpha=float(t.params.get("alpha", 0.05)),
                      baseline={"label": f"{name}/{champ.version}", "name": name,
                                "version": str(champ.version),
                                "model_fingerprint": dict(champ.tags).get(
                                    "recscope.model_fingerprint")})
    write_json(out / "gate" / "gate.json", g.to_dict())
    reg.record_use(uri, name, str(champ.version), f"workflow.{wf.config.name}.gate",
                   str(out.name))
    log(g.statement())
    return {"passed": g.passed}


OPE_GATE_KIND = "recscope.gate/ope"


def op_ope(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log) -> dict[str, Any]:
    """OPE gate: estimate ``policy``'s value on the logged feedback ``logs`` with
    ``estimator`` and pass when the interval's lower end of (policy value - logging value)
    is at least ``min_lift``. The verdict is written (not raised): a register task that
    reads this gate refuses to run when it failed."""
    from recscope.data.loaders import load
    from recscope.ope import action_dists as dists
    from recscope.ope.feedback import LoggedFeedback
    from recscope.ope.value import estimate_value

    p = t.params
    logs = wf.path(p["logs"])
    fb = LoggedFeedback.from_interactions(load(logs), source=str(logs))
    policy = p["policy"]
    seed = int(p.get("seed", 0))
    if policy == "uniform":
        dist = dists.uniform(fb)
    elif policy.startswith("log:"):
        src = wf.path(policy.removeprefix("log:"))
        dist = dists.from_log(LoggedFeedback.from_interactions(load(src), source=str(src)),
                              fb)
    else:
        from recscope.models.base import Component

        comp = Component.load(wf.path(policy))
        dist = dists.from_scorer(comp, fb, n_items=comp.n_items, name=comp.name, seed=seed)
    estimator = p.get("estimator", "snips")
    res = estimate_value(fb, dist, [estimator], bootstrap=int(p.get("bootstrap", 500)),
                         confidence=float(p.get("confidence", 0.95)), seed=seed,
                         logs=str(p["logs"]))
    est = res.estimates[0]
    logging = float(fb.on_policy_value())
    lift, low = est.estimate - logging, est.ci_low - logging
    min_lift = float(p.get("min_lift", 0.0))
    passed = bool(np.isfinite(low) and low >= min_lift)
    statement = (f"OPE gate {t.name!r}: {estimator} lift {lift:+.4g} (interval low "
                 f"{low:+.4g}) over the logging policy's {logging:.4g}, "
                 f"{'>=' if passed else '<'} min_lift {min_lift:g}: "
                 f"{'passed' if passed else 'failed'}")
    (out / "gate").mkdir()
    res.save(out / "gate" / "ope.json")
    write_json(out / "gate" / "gate.json", {
        "kind": OPE_GATE_KIND, "task": t.name, "passed": passed, "estimator": estimator,
        "policy": policy, "policy_value": est.estimate, "ci_low": est.ci_low,
        "ci_high": est.ci_high, "logging_value": logging, "lift": lift, "lift_low": low,
        "min_lift": min_lift, "confidence": float(p.get("confidence", 0.95)),
        "n": fb.n_rounds, "statement": statement})
    log(statement)
    return {"passed": passed, "lift": lift, "lift_low": low}


def _check_ope_gate(doc: dict[str, Any], task: str) -> None:
    """A failed OPE gate stops the task that reads it, in one line naming the number."""
    from recscope.orchestration.workflow import GateBlocked

    if doc.get("kind") == OPE_GATE_KIND and not doc.get("passed"):
        raise GateBlocked(f"{task} blocked: {doc.get('statement')}")


def op_simulate(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log
                ) -> dict[str, Any]:
    """Simulate a launch: the experiment TOML ``experiment`` (``days``, ``seed`` override
    it); writes the simulator's logs and truth into ``sim/``."""
    from recscope.config import validate
    from recscope.sim import load_experiment, run_experiment
    from recscope.sim.experiment_config import ExperimentSpec

    if "gate" in inputs:
        _check_ope_gate(json.loads((inputs["gate"] / "gate.json").read_text()), t.name)
    file = wf.path(t.params["experiment"])
    spec = load_experiment(file)
    update = {k: t.params[k] for k in ("days", "seed") if k in t.params}
    if update:
        spec = validate(ExperimentSpec, {**spec.model_dump(), **update},
                        file=str(t.params["experiment"]))
    result = run_experiment(spec, out / "sim", force=True)
    log(f"simulated {result.n_units} units, {result.impressions} impressions in "
        f"{result.days} days ({result.seconds:.1f} s)")
    return {"units": result.n_units, "impressions": result.impressions}


def op_register(wf: Any, t: Any, inputs: dict[str, Path], out: Path, log: Log
                ) -> dict[str, Any]:
    """Register the model (challenger; champion when first or when the gate passes)."""
    from recscope.orchestration import registry as reg
    from recscope.tracking import tracking_uri

    gate = None
    if "gate" in inputs:
        gfile = inputs["gate"] / "gate.json"
        doc = json.loads(gfile.read_text())
        _check_ope_gate(doc, t.name)
        if doc.get("kind") == reg.GATE_KIND:
            gate = reg.read_gate(gfile)
    r = reg.register(inputs["model"], t.params["registry"],
                     uri=tracking_uri(wf.tracking), gate=gate,
                     lineage={"workflow": wf.config.name, "task": t.name})
    (out / "registration").mkdir()
    write_json(out / "registration" / "registration.json",
               {"name": r.name, "version": r.version, "aliases": r.aliases,
                "promoted": r.promoted, "reason": r.reason})
    log(f"registered {r.name} version {r.version} ({', '.join(r.aliases)}): {r.reason}")
    return {"version": r.version, "promoted": r.promoted}


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "load": op_load, "split": op_split, "train": op_train, "tune": op_tune,
    "evaluate": op_evaluate, "gate": op_gate, "ope": op_ope, "ope_gate": op_ope,
    "register": op_register, "simulate": op_simulate,
}
