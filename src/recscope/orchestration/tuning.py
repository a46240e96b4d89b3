"""Hyper-parameter search with Optuna: TPE, pruning on learning curves, nested runs.

``tune(space, data, settings, out)``:

1. Splits ``data`` per user into a search part and a test part (``test_fraction``) and the
   search part again into fit and validation parts (``validation_fraction``). The test part
   is never seen by the search: it only serves the final comparison.
2. Runs ``trials`` Optuna trials (TPE sampler, seeded). A trial fits the pipeline on the fit
   part; every ``eval_every`` epochs the component's ``on_epoch`` hook scores the validation
   part (``objective``, e.g. ``ndcg@10``, computed by :mod:`recscope.offline`) and reports it
   to the pruner (median or Hyperband), which may stop the trial. Every trial is a nested
   MLflow run carrying its parameters and its learning curve.
3. The study lives in ``optuna.db`` beside the MLflow store's database (the project store
   ``.recscope/`` by default; see :func:`study_storage`), named by the search space, the
   data and the settings, so running the same search again resumes where it stopped;
   trials left running by a killed process are marked failed and re-drawn.
4. The best configuration and the untuned default are both re-fitted on the whole search
   part and compared on the test part by a paired test with an interval
   (:func:`recscope.offline.compare`); the best is saved as a model directory ``out/best``.

Components that expose the epoch hook (``fit(train, *, on_epoch=...)``, see
``recscope.models``) give curves; others report once, after fitting, and cannot be pruned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recscope.data.interactions import Interactions
from recscope.data.rankings import Relevance
from recscope.data.splits import random_holdout
from recscope.errors import ConfigError
from recscope.io import check_out_dir
from recscope.models.base import get_component
from recscope.orchestration.model_dir import save_model_dir
from recscope.orchestration.space import SearchSpace
from recscope.pipeline.config import PipelineConfig
from recscope.results import Effect, Result

PrunerName = Literal["median", "hyperband", "none"]
EPOCH_KEYS = ("iterations", "epochs", "n_estimators")


@dataclass
class TuneSettings:
    """Search settings (the ``recscope tune`` options)."""

    trials: int = 20
    timeout: float | None = None
    objective: str = "ndcg@10"
    pruner: PrunerName = "median"
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    eval_every: int = 0
    """Evaluate every N epochs (0: about 10 evaluations over the longest trial)."""
    max_eval_users: int | None = None
    startup_trials: int = 5
    """Trials the pruner lets finish before it compares (median pruner)."""

    def check(self, *, file: str | None = None) -> None:
        """Refuse impossible settings and an objective metric that does not exist."""
        from recscope.offline.metrics import parse_metrics

        if self.trials < 1:
            raise ConfigError("trials must be at least 1", key="trials", file=file)
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError("timeout must be positive", key="timeout", file=file)
        for name, v in (("validation_fraction", self.validation_fraction),
                        ("test_fraction", self.test_fraction)):
            if not 0 < v < 1:
                raise ConfigError(f"{name} must be in (0, 1), got {v}", key=name, file=file)
        if self.pruner not in ("median", "hyperband", "none"):
            raise ConfigError(f"pruner must be median, hyperband or none, got {self.pruner!r}",
                              key="pruner", file=file)
        try:
            parse_metrics([self.objective])
        except (ConfigError, ValueError) as exc:
            msg = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"unknown objective metric {self.objective!r}: {msg}",
                              key="objective", file=file) from None


@dataclass
class TrialRecord:
    """One trial: its values, state, objective, epochs run and learning curve."""

    number: int
    state: str
    params: dict[str, Any]
    value: float
    epochs: int
    seconds: float
    curve: list[list[float]] = field(default_factory=list)


@dataclass
class TuneResult(Result):
    """A finished search: the trials, the best configuration and the test comparison."""

    name: str
    objective: str
    pruner: str
    best_params: dict[str, Any]
    best_value: float
    trials: list[TrialRecord]
    test: list[Effect]
    best_config: dict[str, Any]
    default_config: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    kind = "tuning"
    title = "Hyper-parameter search"

    @property
    def n_pruned(self) -> int:
        return sum(t.state == "PRUNED" for t in self.trials)

    @property
    def total_epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    def effects(self) -> list[Effect]:
        return list(self.test)

    def notes(self) -> list[str]:
        done = [t for t in self.trials if t.state == "COMPLETE"]
        return [f"{len(self.trials)} trials ({len(done)} complete, {self.n_pruned} pruned), "
                f"{self.total_epochs} epochs in all; best validation {self.objective} "
                f"{self.best_value:.4f}"]


# ---------------------------------------------------------------------------- pieces
def max_epochs(cfg: PipelineConfig) -> int:
    """The largest epoch budget of the pipeline's iterative stages (1 when none)."""
    specs: list[Any] = [*cfg.retrievers]
    if cfg.ranker is not None:
        specs.append(cfg.ranker)
    best = 1
    for spec in specs:
        klass = get_component(spec.component)
        params = {k: v for k, v in spec.params.items() if k not in ("members", "name", "quota")}
        try:
            conf = klass.Config(**params)
        except Exception:  # validated before; a component config with extra members
            continue
        for key in EPOCH_KEYS:
            value = getattr(conf, key, None)
            if isinstance(value, int):
                best = max(best, value)
    return best


def supports_epochs(model: Any) -> bool:
    """Whether ``model.fit`` takes the ``on_epoch`` hook (gives a learning curve)."""
    try:
        return "on_epoch" in inspect.signature(model.fit).parameters
    except (TypeError, ValueError):
        return False


class Scorer:
    """Scores a model's top-k lists for the validation users with ``recscope.offline``."""

    def __init__(self, fit_part: Interactions, validation: Interactions, metric: str,
                 max_users: int | None, seed: int) -> None:
        from recscope.offline.metrics import parse_metrics

        self.metric = metric
        spec = parse_metrics([metric])[0]
        self.k = int(spec.k) if getattr(spec, "k", None) else 100
        self.truth = Relevance.from_pairs(validation.user_index, validation.item_index,
                                          validation.n_users, validation.n_items)
        users = np.unique(validation.user_index).astype(np.int32)
        if max_users is not None and len(users) > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.users = users
        self.calls = 0

    def __call__(self, model: Any) -> float:
        from recscope.offline import evaluate

        self.calls += 1
        ranked = model.recommend(self.users, self.k, exclude="train")
        res = evaluate(ranked, self.truth, [self.metric], bootstrap=0, missing="skip")
        value = float(res.mean(self.metric))
        if not math.isfinite(value):
            raise ConfigError(f"the validation {self.metric} is not finite (no validation "
                              "user has a relevant item?)", key="objective")
        return value


def trial_model(cfg: PipelineConfig) -> Any:
    """What a trial fits. A pipeline with a ranker: the pipeline (its ``fit`` hands the
    epoch hook to the ranker: LambdaMART reports boosting rounds). A pipeline of one
    retriever (no ranker, no re-ranker): that component itself when it reports epochs (ALS,
    BPR, neural models; its top-k is the pipeline's top-k for k up to the quota). Anything
    else: the pipeline, which then reports once, after fitting, and cannot be pruned."""
    from recscope.models.base import ComponentSpec
    from recscope.pipeline import Pipeline

    pipe = Pipeline(cfg)
    if len(cfg.retrievers) == 1 and cfg.ranker is None and not cfg.rerankers \
            and cfg.events is None:
        spec = cfg.retrievers[0]
        component = ComponentSpec(component=spec.component, params=spec.params).build(
            key="retrievers.0")
        if supports_epochs(component):
            return component
    return pipe


def fit_with_curve(model: Any, train: Interactions,
                   on_epoch: Callable[[int, dict[str, float]], bool] | None) -> bool:
    """Fit ``model``, passing ``on_epoch`` when the model supports it; True if it did."""
    if on_epoch is not None and supports_epochs(model):
        model.fit(train, on_epoch=on_epoch)
        return True
    model.fit(train)
    return False


def make_pruner(name: PrunerName, n_reports: int, startup: int) -> Any:
    """Median (after ``startup`` trials and one report), Hyperband, or none."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(n_reports, 1),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def study_name(space: SearchSpace, data_fp: str, s: TuneSettings) -> str:
    """Same space, data and settings (trials and timeout aside) -> same study (resume)."""
    keep = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("trials", "timeout")}
    h = hashlib.sha256(json.dumps([space.fingerprint(), data_fp, keep], sort_keys=True,
                                  default=str).encode()).hexdigest()[:12]
    return f"{space.base.get('name', 'pipeline')}-{h}"


def check_out(out: Path, *, force: bool) -> None:
    """Refuse a bad output folder before any work (a non-empty one needs ``force``)."""
    check_out_dir(out, force=force)


def study_storage(store: str | None, out: Path) -> Path:
    """The Optuna study's SQLite file: ``optuna.db`` beside the MLflow store's database
    when that is a local SQLite file (the project store by default), else in ``out``."""
    from recscope.tracking import tracking_uri

    uri = tracking_uri(store)
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "optuna.db"
    return out / "study.db"


# ---------------------------------------------------------------------------- the search
def tune(space: SearchSpace, data: Interactions, settings: TuneSettings, out: str | Path, *,
         store: str | None = None, force: bool = False,
         log: Callable[[str], None] | None = None) -> TuneResult:
    """Run (or resume) the search and write ``out`` (see the module docstring)."""
    import optuna

    from recscope.offline import compare, evaluate
    from recscope.pipeline import Pipeline
    from recscope.tracking import track

    settings.check()
    out = Path(out)
    check_out(out, force=force)
    say = log or (lambda _m: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    outer = random_holdout(data, settings.test_fraction, seed=settings.seed)
    search, test = outer.train, outer.test
    inner = random_holdout(search, settings.validation_fraction, seed=settings.seed + 1)
    fit_part, val = inner.train, inner.test
    if len(val) == 0 or len(test) == 0:
        raise ConfigError("the data are too small to split into fit, validation and test",
                          key="validation_fraction")
    scorer = Scorer(fit_part, val, settings.objective, settings.max_eval_users, settings.seed)
    default_cfg = space.default_config()
    budget = max(max_epochs(space.config({p.name: p.spec.ends()[-1] for p in space.params})),
                 max_epochs(default_cfg))
    every = settings.eval_every or max(1, math.ceil(budget / 10))
    n_reports = max(1, math.ceil(budget / every))

    db = study_storage(store, out)
    db.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{db.resolve()}"
    name = study_name(space, data.fingerprint(), settings)
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=make_pruner(settings.pruner, n_reports, settings.startup_trials))
    _fail_stale(study)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                       optuna.trial.TrialState.PRUNED)]
    remaining = max(0, settings.trials - len(finished))
    if finished:
        say(f"resuming study {name}: {len(finished)} trials done, {remaining} to run")

    inputs = {"data": data.fingerprint(), "space": space.fingerprint()}
    cfg_doc = {"settings": dataclasses.asdict(settings), "space": {
        p.name: p.spec.model_dump(mode="json", exclude_none=True) for p in space.params}}
    t_start = time.perf_counter()
    with track("tune", config=cfg_doc, inputs=inputs, store=store,
               tags={"recscope.study": name}) as parent:

        def objective(trial: optuna.Trial) -> float:
            values = {p.name: p.suggest(trial) for p in space.params}
            cfg = space.config(values)
            model = trial_model(cfg)
            state = {"epochs": 0, "pruned": False}
            curve: list[list[float]] = []
            t0 = time.perf_counter()
            with track(f"trial-{trial.number}", config=cfg,
                       tags={"optuna.trial": str(trial.number)}) as run:

                def on_epoch(epoch: int, _metrics: dict[str, float]) -> bool:
                    state["epochs"] = epoch
                    if epoch % every:
                        return False
                    value = scorer(model)
                    curve.append([float(epoch), value])
                    run.log_metrics({f"val.{settings.objective}": value}, step=epoch)
                    trial.report(value, epoch)
                    if trial.should_prune():
                        state["pruned"] = True
                        return True
                    return False

                curved = fit_with_curve(model, fit_part, on_epoch)
                if not curved or state["epochs"] == 0:  # no epoch was reported
                    state["epochs"] = max_epochs(cfg)
                if not state["pruned"]:
                    if curve and int(curve[-1][0]) == state["epochs"]:
                        value = curve[-1][1]
                    else:
                        value = scorer(model)
                        curve.append([float(state["epochs"]), value])
                        run.log_metrics({f"val.{settings.objective}": value},
                                        step=state["epochs"])
                seconds = time.perf_counter() - t0
                run.log_metrics({"epochs": state["epochs"], "seconds": seconds})
                run.log_dict({"curve": curve}, "curve.json")
                run.set_tags({"optuna.state": "PRUNED" if state["pruned"] else "COMPLETE"})
            trial.set_user_attr("epochs", int(state["epochs"]))
            trial.set_user_attr("seconds", seconds)
            trial.set_user_attr("curve", curve)
            say(f"trial {trial.number}: " + ("pruned" if state["pruned"] else f"{value:.4f}")
                + f" after {state['epochs']} epochs")
            if state["pruned"]:
                raise optuna.TrialPruned()
            return value

        if remaining:
            study.optimize(objective, n_trials=remaining, timeout=settings.timeout,
                           catch=())
        search_seconds = time.perf_counter() - t_start
        records = [_record(t) for t in study.trials
                   if t.state.name in ("COMPLETE", "PRUNED")]
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise ConfigError("no trial completed (all pruned or timed out); raise --trials "
                              "or --timeout", key="trials")
        best = study.best_trial
        best_cfg = space.config(dict(best.params))

        # final comparison on the untouched test part
        say("refitting the best and the default configuration on the search part")
        best_model = Pipeline(best_cfg).fit(search)
        default_model = Pipeline(default_cfg).fit(search)
        truth = Relevance.from_pairs(test.user_index, test.item_index, test.n_users,
                                     test.n_items)
        users = np.unique(test.user_index).astype(np.int32)
        k = scorer.k
        ev = {name: evaluate(m.recommend(users, k, exclude="train"), truth,
                             [settings.objective], seed=settings.seed)
              for name, m in (("default", default_model), ("best", best_model))}
        cmp = compare(ev, baseline="default", seed=settings.seed)
        t = cmp.get("best", settings.objective)
        effects = [
            Effect(settings.objective, ev["default"].mean(settings.objective),
                   *ev["default"].ci(settings.objective), n=ev["default"].n_users,
                   extra={"system": "default"}),
            Effect(settings.objective, ev["best"].mean(settings.objective),
                   *ev["best"].ci(settings.objective), n=ev["best"].n_users,
                   extra={"system": "best"}),
            Effect(f"{settings.objective} (best - default)", t.estimate, t.ci_low, t.ci_high,
                   t.se, t.p_value, t.n,
                   extra={"system": "best - default", "test": f"paired {cmp.test}"}),
        ]
        parent.log_metrics({"best.validation": float(best.value),
                            "test.best": ev["best"].mean(settings.objective),
                            "test.default": ev["default"].mean(settings.objective),
                            "trials.pruned": sum(r.state == "PRUNED" for r in records),
                            "epochs.total": sum(r.epochs for r in records)})
        result = TuneResult(
            name=str(best_cfg.name), objective=settings.objective, pruner=settings.pruner,
            best_params=dict(best.params), best_value=float(best.value), trials=records,
            test=effects, best_config=best_cfg.model_dump(mode="json"),
            default_config=default_cfg.model_dump(mode="json"),
            info={"study": name, "storage": storage, "eval_every": every,
                  "epoch_budget": budget, "data_fingerprint": data.fingerprint(),
                  "search_fingerprint": search.fingerprint(),
                  "test_fingerprint": test.fingerprint(), "n_fit": len(fit_part),
                  "n_validation": len(val), "n_test": len(test),
                  "search_seconds": search_seconds,
                  "curves": supports_epochs(trial_model(best_cfg)),
                  "mlflow_run": parent.run_id, "comparison": t.to_dict()})
        save_model_dir(out / "best", best_model, search,
                       {"tuned": True, "study": name, "best_params": dict(best.params),
                        "validation": {settings.objective: float(best.value)}})
        result.save(out / "tune.json")
        parent.log_artifact(out / "tune.json")
    return result


def _record(t: Any) -> TrialRecord:
    return TrialRecord(number=t.number, state=t.state.name, params=dict(t.params),
                       value=float(t.value) if t.value is not None else math.nan,
                       epochs=int(t.user_attrs.get("epochs", 0)),
                       seconds=float(t.user_attrs.get("seconds", math.nan)),
                       curve=[list(map(float, p)) for p in t.user_attrs.get("curve", [])])


def _fail_stale(study: Any) -> None:
    """Trials left RUNNING by a killed process: mark them failed (they are re-drawn)."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)


__all__ = ["TrialRecord", "TuneResult", "TuneSettings", "fit_with_curve", "max_epochs",
           "supports_epochs", "tune"]
