"""Declarative workflows: one TOML for the recurring job, a local runner and Airflow.

```toml
name = "ml100k-weekly"
schedule = "@weekly"          # Airflow schedule (cron or preset); the local runner ignores it
retries = 1                   # per task, local runner and Airflow alike
retry_delay_seconds = 5
workdir = "out/wf"            # task outputs and logs (relative to this file)
tracking = "out/wf/store"     # optional MLflow store (runs and registry); default: project

[[tasks]]
name = "data"
op = "load"
params = { path = "../shared/data/ml-100k" }

[[tasks]]
name = "split"
op = "split"
inputs = { data = "data" }
params = { test_fraction = 0.2, seed = 0 }

[[tasks]]
name = "train"
op = "train"                  # or "tune" (params: config, trials, pruner, objective)
inputs = { data = "split.train" }
params = { config = "pipeline.toml" }

[[tasks]]
name = "evaluate"
op = "evaluate"
inputs = { model = "train", test = "split.test" }

[[tasks]]
name = "gate"
op = "gate"                   # paired test against the registered champion
inputs = { model = "train", test = "split.test" }
params = { registry = "ml100k", metric = "ndcg@10", margin = 0.0 }

[[tasks]]
name = "register"
op = "register"
inputs = { model = "train", gate = "gate" }
params = { registry = "ml100k" }
```

Every task has a content key: the hash of its op, its parameters (files named by a
parameter are hashed by content), the keys of the tasks it reads and, for a gate, the
champion it compares with. A task whose output folder holds a ``done.json`` with the same
key is skipped, so a re-run with nothing changed does no work and a run that failed or was
killed resumes after the last finished task. Outputs are written to a temporary folder
and moved into place when the task succeeds, so they are whole or absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from recscope.config import StrictModel, validate
from recscope.errors import ConfigError, RecscopeError
from recscope.io import atomic_dir, read_toml, write_json


class GateBlocked(RecscopeError):
    """A gate upstream of this task did not pass (not retried: the inputs decide)."""

Op = Literal["load", "split", "train", "tune", "evaluate", "gate", "ope", "ope_gate",
             "register", "simulate"]
OP_VERSION = "1"

#: For each op: (required inputs, optional inputs, outputs, parameters that name files).
OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "load": ((), (), ("data",), ("path",)),
    "split": (("data",), (), ("train", "test"), ()),
    "train": (("data",), (), ("model",), ("config",)),
    "tune": (("data",), (), ("model", "tune"), ("config",)),
    "evaluate": (("model", "test"), (), ("eval",), ()),
    "gate": (("model", "test"), (), ("gate",), ()),
    "ope": ((), (), ("gate",), ("logs",)),
    "ope_gate": ((), (), ("gate",), ("logs",)),
    "register": (("model",), ("gate",), ("registration",), ()),
    "simulate": ((), ("gate", "registration"), ("sim",), ("experiment",)),
}
#: The parameters each op accepts (others are refused, naming the key).
PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "load": {"path": str, "format": str},
    "split": {"method": str, "test_fraction": (int, float), "seed": int},
    "train": {"config": str},
    "tune": {"config": str, "trials": int, "timeout": (int, float), "objective": str,
             "pruner": str, "validation_fraction": (int, float),
             "test_fraction": (int, float), "seed": int, "eval_every": int},
    "evaluate": {"metrics": list, "k": int},
    "gate": {"registry": str, "metric": str, "margin": (int, float), "alpha": (int, float)},
    "ope": {"logs": str, "policy": str, "estimator": str, "min_lift": (int, float),
            "bootstrap": int, "confidence": (int, float), "seed": int},
    "register": {"registry": str},
    "simulate": {"experiment": str, "days": int, "seed": int},
}
PARAMS["ope_gate"] = PARAMS["ope"]


class TaskSpec(StrictModel):
    """One step: a name, an op, its inputs (``task`` or ``task.output``) and parameters."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    op: Op
    inputs: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)


class WorkflowConfig(StrictModel):
    """The workflow file (see the module docstring)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
    schedule: str | None = None
    retries: int = Field(default=0, ge=0, le=10)
    retry_delay_seconds: float = Field(default=5.0, ge=0)
    workdir: str = "recscope-out/workflows"
    tracking: str | None = None
    tasks: list[TaskSpec] = Field(min_length=1)


@dataclass
class Workflow:
    """A checked workflow: tasks in dependency order, paths resolved against the file."""

    config: WorkflowConfig
    file: Path
    order: list[TaskSpec]
    upstream: dict[str, dict[str, tuple[str, str]]]
    """task -> input name -> (upstream task, its output)."""
    shown: str = ""
    """The file name as given (for error messages)."""

    @property
    def root(self) -> Path:
        return self.file.parent

    @property
    def workdir(self) -> Path:
        return (self.root / self.config.workdir).resolve()

    @property
    def tracking(self) -> str | None:
        t = self.config.tracking
        if t is None or "://" in t:
            return t
        return str((self.root / t).resolve())

    def path(self, value: str) -> Path:
        """A path parameter, relative to the workflow file."""
        return (self.root / value).resolve()

    def task(self, name: str) -> TaskSpec:
        for t in self.order:
            if t.name == name:
                return t
        raise ConfigError(f"no task named {name!r}; tasks: {[t.name for t in self.order]}",
                          key="--task", file=str(self.file))

    def output(self, task: str, name: str) -> Path:
        """Where ``task`` writes its output ``name``."""
        return self.workdir / "tasks" / task / name


def load_workflow(path: str | Path) -> Workflow:
    """Read and check a workflow file: ops, inputs, parameters, files, cycles.

    Every problem is a ConfigError naming the file and the key (``tasks.2.inputs.model``).
    """
    file = Path(path).resolve()
    shown = str(Path(path))
    cfg = validate(WorkflowConfig, read_toml(path, "workflow"), file=shown)
    names = [t.name for t in cfg.tasks]
    for i, t in enumerate(cfg.tasks):
        if names.count(t.name) > 1:
            raise ConfigError(f"task name {t.name!r} is used twice", key=f"tasks.{i}.name",
                              file=shown)
    index = {t.name: i for i, t in enumerate(cfg.tasks)}
    upstream: dict[str, dict[str, tuple[str, str]]] = {}
    for i, t in enumerate(cfg.tasks):
        required, optional, _outs, file_params = OPS[t.op]
        for need in required:
            if need not in t.inputs:
                raise ConfigError(f"op {t.op!r} needs input {need!r}",
                                  key=f"tasks.{i}.inputs.{need}", file=shown)
        ups: dict[str, tuple[str, str]] = {}
        for key, ref in t.inputs.items():
            where = f"tasks.{i}.inputs.{key}"
            if key not in required + optional:
                raise ConfigError(f"op {t.op!r} takes inputs {list(required + optional)}, not "
                                  f"{key!r}", key=where, file=shown)
            task, _, out = ref.partition(".")
            if task not in index:
                raise ConfigError(f"input {ref!r} names no task (tasks: {names})", key=where,
                                  file=shown)
            outs = OPS[cfg.tasks[index[task]].op][2]
            out = out or outs[0]
            if out not in outs:
                raise ConfigError(f"task {task!r} has outputs {list(outs)}, not {out!r}",
                                  key=where, file=shown)
            if _kind(out) != _kind(key):
                raise ConfigError(f"input {key!r} expects {_kind(key)}, but {ref!r} is "
                                  f"{_kind(out)}", key=where, file=shown)
            ups[key] = (task, out)
        upstream[t.name] = ups
        allowed = PARAMS[t.op]
        for key, value in t.params.items():
            where = f"tasks.{i}.params.{key}"
            if key not in allowed:
                raise ConfigError(f"op {t.op!r} takes parameters {sorted(allowed)}",
                                  key=where, file=shown)
            types = allowed[key]
            if not isinstance(value, types) or isinstance(value, bool):
                raise ConfigError(f"wrong type {type(value).__name__}", key=where, file=shown)
        for key in file_params:
            if key not in t.params:
                raise ConfigError(f"op {t.op!r} needs parameter {key!r}",
                                  key=f"tasks.{i}.params.{key}", file=shown)
            if not (file.parent / t.params[key]).exists():
                raise ConfigError(f"file not found: {t.params[key]}",
                                  key=f"tasks.{i}.params.{key}", file=shown)
        if t.op in ("gate", "register") and "registry" not in t.params:
            raise ConfigError(f"op {t.op!r} needs parameter 'registry' (the model name)",
                              key=f"tasks.{i}.params.registry", file=shown)
        if t.op in ("ope", "ope_gate"):
            _check_ope(file.parent, t, i, shown)
    order = _toposort(cfg, upstream, index, shown)
    return Workflow(cfg, file, order, upstream, shown)


def _check_ope(root: Path, t: TaskSpec, i: int, file: str) -> None:
    """An OPE gate's policy, estimator and options, each named by its key."""
    from recscope.ope.estimators import make_estimator

    policy = t.params.get("policy")
    where = f"tasks.{i}.params"
    if policy is None:
        raise ConfigError("op 'ope' needs parameter 'policy' (uniform, log:PATH or "
                          "MODEL_DIR)", key=f"{where}.policy", file=file)
    src = policy.removeprefix("log:")
    if policy != "uniform" and not (root / src).exists():
        raise ConfigError(f"policy must be 'uniform', log:PATH or a model directory; not "
                          f"found: {src}", key=f"{where}.policy", file=file)
    try:
        make_estimator(t.params.get("estimator", "snips"))
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=f"{where}.estimator", file=file) from None
    if t.params.get("bootstrap", 500) < 1:
        raise ConfigError("must be >= 1 (the gate reads the interval)",
                          key=f"{where}.bootstrap", file=file)
    if not 0 < t.params.get("confidence", 0.95) < 1:
        raise ConfigError("must be in (0, 1)", key=f"{where}.confidence", file=file)


def _kind(name: str) -> str:
    return {"train": "data", "test": "data", "data": "data", "model": "model",
            "tune": "tune", "eval": "eval", "gate": "gate",
            "registration": "registration", "sim": "sim"}[name]


def _toposort(cfg: WorkflowConfig, upstream: dict[str, dict[str, tuple[str, str]]],
              index: dict[str, int], file: str) -> list[TaskSpec]:
    """Tasks in dependency order (file order among ready ones); a cycle is an error."""
    done: list[str] = []
    left = [t.name for t in cfg.tasks]
    while left:
        ready = [n for n in left if all(u in done for u, _ in upstream[n].values())]
        if not ready:
            cycle = _find_cycle(left, upstream)
            first = cycle[0]
            raise ConfigError(f"the tasks form a cycle: {' -> '.join([*cycle, first])}",
                              key=f"tasks.{index[first]}.inputs", file=file)
        done.append(ready[0])
        left.remove(ready[0])
    return [cfg.tasks[index[n]] for n in done]


def _find_cycle(left: list[str], upstream: dict[str, dict[str, tuple[str, str]]]
                ) -> list[str]:
    node, seen = left[0], []
    while node not in seen:
        seen.append(node)
        node = next(u for u, _ in upstream[node].values() if u in left)
    return seen[seen.index(node):]


def check_configs(wf: Workflow, tasks: list[str] | None = None) -> None:
    """The pipeline TOMLs, search spaces and metrics of ``tasks`` (default: all) must be
    valid; errors name the file and the key. Run before any task of a run starts (only for
    the tasks that will run, so an up-to-date workflow does not import the models)."""
    _check_task_configs(wf, wf.shown or str(wf.file), tasks)


def _check_task_configs(wf: Workflow, file: str, tasks: list[str] | None = None) -> None:
    """Pipeline TOMLs of train/tune tasks must be valid (errors name that file)."""
    from recscope.orchestration.space import load_space
    from recscope.pipeline.config import load_config

    for t in wf.order:
        if tasks is not None and t.name not in tasks:
            continue
        if t.op == "train":
            load_config(wf.path(t.params["config"]))
        elif t.op == "tune":
            space = load_space(wf.path(t.params["config"]))
            if not space.params:
                raise ConfigError("no search space in the config (mark values with "
                                  "{tune = ...})", key="params",
                                  file=str(wf.path(t.params["config"])))
            _tune_settings(t).check(file=file)
        elif t.op in ("evaluate", "gate"):
            from recscope.offline.metrics import parse_metrics

            metrics = t.params.get("metrics", [t.params.get("metric", "ndcg@10")])
            try:
                parse_metrics(metrics)
            except (ConfigError, ValueError) as exc:
                i = wf.config.tasks.index(t)
                raise ConfigError(str(getattr(exc, "problem", exc)),
                                  key=f"tasks.{i}.params.metric"
                                  + ("s" if "metrics" in t.params else ""), file=file) from None


def _tune_settings(t: TaskSpec) -> Any:
    from recscope.orchestration.tuning import TuneSettings

    p = t.params
    return TuneSettings(trials=p.get("trials", 20), timeout=p.get("timeout"),
                        objective=p.get("objective", "ndcg@10"),
                        pruner=p.get("pruner", "median"),
                        validation_fraction=float(p.get("validation_fraction", 0.2)),
                        test_fraction=float(p.get("test_fraction", 0.2)),
                        seed=p.get("seed", 0), eval_every=p.get("eval_every", 0))


# ---------------------------------------------------------------------------- keys
def content_hash(path: Path) -> str:
    """sha256 of a file's bytes, or of every file under a folder (names included)."""
    h = hashlib.sha256()
    files = sorted(x for x in path.rglob("*") if x.is_file()) if path.is_dir() else [path]
    for f in files:
        if f.name == ".recscope-manifest.json":
            continue
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def task_key(wf: Workflow, t: TaskSpec, keys: dict[str, str], extra: str = "") -> str:
    """The task's content key (see the module docstring)."""
    file_params = OPS[t.op][3]
    params = {k: (content_hash(wf.path(v)) if k in file_params else v)
              for k, v in sorted(t.params.items())}
    doc = {"op": t.op, "v": OP_VERSION, "params": params, "extra": extra,
           "inputs": {k: [keys[u], out] for k, (u, out) in sorted(wf.upstream[t.name].items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


# ---------------------------------------------------------------------------- running
@dataclass
class TaskOutcome:
    """What happened to one task in a run."""

    name: str
    status: Literal["done", "skipped", "failed"]
    key: str
    seconds: float
    attempts: int
    error: str = ""


class TaskLog:
    """Appends timestamped lines to ``logs/<task>.log`` (kept across runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")


def _done(wf: Workflow, name: str) -> dict[str, Any] | None:
    f = wf.workdir / "tasks" / name / "done.json"
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run(wf: Workflow, *, only: str | None = None, retries: int | None = None,
        echo: Callable[[str], None] | None = None) -> list[TaskOutcome]:
    """Run the workflow (or the single task ``only``, whose inputs must be done).

    Finished tasks with the same key are skipped; a failing task is retried
    ``retries`` times (default: the file's) and then stops the run with its error.
    """
    say = echo or (lambda _m: None)
    n_retries = wf.config.retries if retries is None else retries
    targets = [wf.task(only).name] if only else [t.name for t in wf.order]
    check_configs(wf, plan(wf, targets, only))
    tasks_dir = wf.workdir / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for stale in tasks_dir.glob(".*.tmp"):  # left by a killed run: never complete outputs
        shutil.rmtree(stale, ignore_errors=True)
    keys: dict[str, str] = {}
    outcomes: list[TaskOutcome] = []
    for t in wf.order:
        key = task_key(wf, t, keys, _extra_key(wf, t))
        keys[t.name] = key
        if t.name not in targets:
            continue
        done = _done(wf, t.name)
        if done is not None and done.get("key") == key:
            outcomes.append(TaskOutcome(t.name, "skipped", key, 0.0, 0))
            say(f"{t.name}: unchanged (key {key}), skipped")
            continue
        log = TaskLog(wf.workdir / "logs" / f"{t.name}.log")
        attempt, t0 = 0, time.perf_counter()
        while True:
            attempt += 1
            log(f"start attempt {attempt} of {n_retries + 1} (op {t.op}, key {key})")
            say(f"{t.name}: running ({t.op}, attempt {attempt})")
            try:
                info = _run_task(wf, t, key, log)
            except KeyboardInterrupt:
                log("interrupted")
                raise
            except Exception as exc:
                log(f"failed: {type(exc).__name__}: {exc}")
                log(traceback.format_exc().rstrip())
                if attempt > n_retries or isinstance(exc, ConfigError | GateBlocked):
                    outcomes.append(TaskOutcome(t.name, "failed", key,
                                                time.perf_counter() - t0, attempt, str(exc)))
                    raise RecscopeError(f"workflow {wf.config.name}: task {t.name!r} failed "
                                        f"after {attempt} attempt(s): {exc} (log: "
                                        f"{log.path})") from exc
                time.sleep(wf.config.retry_delay_seconds)
                continue
            seconds = time.perf_counter() - t0
            log(f"done in {seconds:.2f}s: {json.dumps(info, default=str)}")
            outcomes.append(TaskOutcome(t.name, "done", key, seconds, attempt))
            say(f"{t.name}: done in {seconds:.1f}s")
            break
    return outcomes


def plan(wf: Workflow, targets: list[str], only: str | None = None) -> list[str]:
    """The targets that will run: key changed since they last finished, or an input that
    will run. Reads only; with ``only``, its inputs must be done with their current keys."""
    keys: dict[str, str] = {}
    will: set[str] = set()
    ancestors = _ancestors(wf, only) if only else set()
    for t in wf.order:
        keys[t.name] = task_key(wf, t, keys, _extra_key(wf, t))
        done = _done(wf, t.name)
        stale = done is None or done.get("key") != keys[t.name] or any(
            u in will for u, _ in wf.upstream[t.name].values())
        if t.name in ancestors and stale:
            raise RecscopeError(f"task {only!r} needs {t.name!r}, which is not done with its "
                                "current inputs; run the workflow first")
        if stale and t.name in targets:
            will.add(t.name)
    return [t.name for t in wf.order if t.name in will]


def _ancestors(wf: Workflow, name: str) -> set[str]:
    out: set[str] = set()
    stack = [name]
    while stack:
        for u, _ in wf.upstream[stack.pop()].values():
            if u not in out:
                out.add(u)
                stack.append(u)
    return out


def _extra_key(wf: Workflow, t: TaskSpec) -> str:
    """Run-time state a task depends on: the champion a gate compares with (no champion and
    a champion that IS this task's (finished) candidate model count as the same state, so
    a re-run after the workflow's own registration skips the gate); the content of an OPE
    gate's policy log or model directory."""
    if t.op in ("ope", "ope_gate"):
        policy = t.params["policy"]
        return "" if policy == "uniform" else content_hash(wf.path(policy.removeprefix("log:")))
    if t.op != "gate":
        return ""
    from recscope.orchestration.model_dir import model_fingerprint
    from recscope.orchestration.registry import champion_fingerprint
    from recscope.tracking import tracking_uri

    champ = champion_fingerprint(tracking_uri(wf.tracking), t.params["registry"])
    if champ is None:
        return ""
    up, out = wf.upstream[t.name]["model"]
    model = wf.output(up, out)
    if (model / "train.json").exists() and model_fingerprint(model) == champ:
        return ""
    return champ


@contextlib.contextmanager
def _task_dir(wf: Workflow, t: TaskSpec, key: str) -> Iterator[Path]:
    """A temporary output folder moved into place (with done.json) on success."""
    with atomic_dir(wf.workdir / "tasks" / t.name, force=True) as tmp:
        yield tmp
        write_json(tmp / "done.json", {"key": key, "op": t.op, "task": t.name})


def _run_task(wf: Workflow, t: TaskSpec, key: str, log: Callable[[str], None]
              ) -> dict[str, Any]:
    from recscope.orchestration import tasks as ops

    inputs = {k: wf.output(u, out) for k, (u, out) in wf.upstream[t.name].items()}
    with _task_dir(wf, t, key) as out:
        return ops.OPS[t.op](wf, t, inputs, out, log)


def status(wf: Workflow) -> list[dict[str, Any]]:
    """For each task: whether its output is done with the current key."""
    keys: dict[str, str] = {}
    rows = []
    for t in wf.order:
        keys[t.name] = task_key(wf, t, keys, _extra_key(wf, t))
        done = _done(wf, t.name)
        rows.append({"task": t.name, "op": t.op, "key": keys[t.name],
                     "state": "done" if done and done.get("key") == keys[t.name]
                     else ("stale" if done else "to run")})
    return rows


__all__ = ["OPS", "GateBlocked", "TaskOutcome", "TaskSpec", "Workflow", "WorkflowConfig", "content_hash",
           "load_workflow", "run", "status", "task_key"]
