"""``recscope ope``: estimate a policy's value from logged bandit feedback.

``--policy`` is a saved model directory (scored into a deterministic, softmax or
epsilon-greedy ranking policy), ``uniform``, or ``log:PATH`` (the policy that produced the
log at PATH, known through its logged propensities; its observed mean reward is reported
as ``on_policy``). The JSON is the :class:`~recscope.ope.OPEResult` (``kind: "ope"``): one
row per estimator under ``estimates`` with ``estimate``, ``ci_low``, ``ci_high``, ``se``,
``n``, ``estimator`` and ``diagnostics`` (see docs/ope.md). The run is logged to tracking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recscope.cli.common import HtmlOut, JsonOut, Tracking
from recscope.errors import ConfigError

_LOG_METHODS = ("harmonic", "nearest", "frequency")
_KINDS = ("deterministic", "softmax", "epsilon-greedy")
_REWARD_MODELS = ("logistic", "lightgbm", "ridge")


def ope(
    logs: Annotated[Path, typer.Option("--logs", help="Logged feedback: a canonical file "
                                       "(position, propensity) or a data set folder (OBD).")],
    policy: Annotated[str, typer.Option("--policy", help="MODEL_DIR, 'uniform' or log:PATH.")],
    estimator: Annotated[list[str] | None, typer.Option(
        "--estimator", "-e", help="Estimator (repeatable): dm, ips, clipped-ips[:M], snips, "
        "dr, sndr, switch-dr[:tau], dr-os[:lambda], iips, rips, sips, cascade-dr.")] = None,
    json_out: JsonOut = None,
    html_out: HtmlOut = None,
    reward_model: Annotated[str, typer.Option(help="logistic, lightgbm or ridge.")] = "logistic",
    n_folds: Annotated[int, typer.Option(help="Cross-fitting folds of the reward model "
                                         "(>= 2).")] = 3,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals "
                                           "(>= 0; 0: no interval).")] = 500,
    confidence: Annotated[float, typer.Option(help="Interval level, in (0, 1).")] = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    policy_kind: Annotated[str, typer.Option(help="For MODEL_DIR: deterministic, softmax or "
                                             "epsilon-greedy.")] = "deterministic",
    temperature: Annotated[float, typer.Option(help="Softmax temperature (> 0).")] = 1.0,
    epsilon: Annotated[float, typer.Option(help="Epsilon of epsilon-greedy, in [0, 1].")
                       ] = 0.1,
    log_method: Annotated[str, typer.Option(help="For log:PATH: harmonic, nearest or "
                                            "frequency (see docs/ope.md).")] = "harmonic",
    engine: Annotated[str, typer.Option(
        help="memory | stream (a scored log read in Parquet batches) | spark (local Spark or "
        "the active session; --logs may be table:NAME). stream/spark need --policy "
        "column:NAME.")] = "memory",
    tracking: Tracking = None,
) -> None:
    """Estimate a policy's value from logs with off-policy estimators.

    With --engine stream or spark, --logs is a scored log (Parquet file, folder or
    table:NAME) with reward, pscore, the policy's probability of the logged action (the
    column named by --policy column:NAME) and, for dm/dr/sndr/switch-dr/dr-os, q_hat and
    v_hat; intervals come from a Poisson bootstrap keyed by round_id or slate_id.

    Example: recscope ope --logs ../shared/data/obd/random/all --policy
    log:../shared/data/obd/bts/all --json ope.json
    """
    from recscope.cli.common import check_outputs, console, file_fingerprint, progress
    from recscope.data.loaders import load
    from recscope.ope import action_dists as dists
    from recscope.ope.estimators import make_estimator
    from recscope.ope.feedback import LoggedFeedback
    from recscope.ope.reward import RewardModel
    from recscope.ope.value import DEFAULT_ESTIMATORS, estimate_value
    from recscope.tracking import track

    if bootstrap < 0:
        raise ConfigError(f"must be >= 0, got {bootstrap}", key="--bootstrap")
    if not 0 < confidence < 1:
        raise ConfigError(f"must be in (0, 1), got {confidence}", key="--confidence")
    if seed < 0:
        raise ConfigError(f"must be >= 0, got {seed}", key="--seed")
    if n_folds < 2:
        raise ConfigError(f"must be >= 2, got {n_folds}", key="--n-folds")
    if reward_model not in _REWARD_MODELS:
        raise ConfigError(f"must be one of {', '.join(_REWARD_MODELS)}, got {reward_model!r}",
                          key="--reward-model")
    if policy_kind not in _KINDS:
        raise ConfigError(f"must be one of {', '.join(_KINDS)}, got {policy_kind!r}",
                          key="--policy-kind")
    if not temperature > 0:
        raise ConfigError(f"must be > 0, got {temperature}", key="--temperature")
    if not 0 <= epsilon <= 1:
        raise ConfigError(f"must be in [0, 1], got {epsilon}", key="--epsilon")
    if log_method not in _LOG_METHODS:
        raise ConfigError(f"must be one of {', '.join(_LOG_METHODS)}, got {log_method!r}",
                          key="--log-method")
    if engine not in ("memory", "stream", "spark"):
        raise ConfigError(f"must be memory, stream or spark, got {engine!r}", key="--engine")
    if engine != "memory":
        _ope_scaled(engine, logs, policy, list(estimator or ["ips", "snips"]), bootstrap,
                    confidence, seed, json_out, html_out, tracking)
        return
    src_path = Path(policy.removeprefix("log:")) if policy.startswith("log:") else None
    if not (policy == "uniform" or src_path is not None or Path(policy).is_dir()):
        raise ConfigError(f"must be a model directory, 'uniform' or log:PATH; {policy!r} is "
                          "none of these", key="--policy")
    from recscope.io import did_you_mean

    if not logs.exists():
        raise ConfigError(f"logs not found: {logs}{did_you_mean(logs)}", key="--logs")
    if src_path is not None and not src_path.exists():
        raise ConfigError(f"policy log not found: {src_path}{did_you_mean(src_path)}",
                          key="--policy")
    names = list(estimator or DEFAULT_ESTIMATORS)
    ests = [make_estimator(n) for n in names]
    check_outputs(json_out, html_out, tracking=tracking)
    rm = RewardModel(kind=reward_model, n_folds=n_folds, seed=seed)  # type: ignore[arg-type]
    config = {"logs": str(logs), "policy": policy, "estimators": names,
              "reward_model": reward_model, "n_folds": n_folds, "bootstrap": bootstrap,
              "confidence": confidence, "seed": seed, "policy_kind": policy_kind,
              "temperature": temperature, "epsilon": epsilon, "log_method": log_method}
    with progress() as bar:
        task = bar.add_task("loading logs", total=3)
        fb = LoggedFeedback.from_interactions(load(logs), source=str(logs))
        on_policy = None
        if policy == "uniform":
            dist = dists.uniform(fb)
        elif src_path is not None:
            source = LoggedFeedback.from_interactions(load(src_path), source=str(src_path))
            dist = dists.from_log(source, fb, method=log_method)  # type: ignore[arg-type]
            on_policy = source.on_policy_value()
        else:
            from recscope.models.base import Component

            comp = Component.load(policy)
            dist = dists.from_scorer(comp, fb, n_items=comp.n_items,
                                     name=f"{comp.name}:{Path(policy).name}",
                                     kind=policy_kind,  # type: ignore[arg-type]
                                     temperature=temperature, epsilon=epsilon, seed=seed)
        bar.update(task, advance=1, description="fitting reward model")
        q_hat = rm.fit_predict(fb) if any(e.needs_model for e in ests) else None
        bar.update(task, advance=1, description="estimating")
        result = estimate_value(fb, dist, ests, q_hat=q_hat, bootstrap=bootstrap,
                                confidence=confidence, seed=seed, on_policy=on_policy,
                                logs=str(logs))
        if q_hat is not None:
            result.reward_model = rm.describe()
        bar.update(task, advance=1, description="done")
    inputs = {"logs": file_fingerprint(logs)}
    if src_path is not None:
        inputs["policy_log"] = file_fingerprint(src_path)
    with track("ope", config=config, inputs=inputs, store=tracking) as run:
        if src_path is not None:
            run.set_tags({"policy_log": str(src_path)})
        metrics = {f"{e['estimator']}.{k}": getattr(e, k) for e in result.estimates
                   for k in ("estimate", "ci_low", "ci_high")}
        metrics.update({f"{k}.relative_error": v for k, v in result.relative_errors().items()})
        if on_policy is not None:
            metrics["on_policy"] = on_policy
        run.log_metrics(metrics)
        run.log_dict(result.to_dict(), "ope.json")
        from recscope.cli.common import write_outputs

        write_outputs(result, json_out, html_out, run=run, what="off-policy estimates")
    console.print(result.rich_table())


def _ope_scaled(engine: str, logs: Path, policy: str, names: list[str], bootstrap: int,
                confidence: float, seed: int, json_out: Path | None, html_out: Path | None,
                tracking: Path | None) -> None:
    """``--engine stream`` / ``spark`` on a scored log: check, compute, track, write."""
    from recscope.cli.common import check_outputs, console, write_outputs
    from recscope.io import did_you_mean
    from recscope.ope.estimators import make_estimator
    from recscope.ope.scale import ope_spark, ope_stream
    from recscope.tracking import track

    if not policy.startswith("column:") or not policy.removeprefix("column:"):
        raise ConfigError(f"the {engine} engine reads the policy's probabilities from a "
                          f"column of the log: give column:NAME, got {policy!r}",
                          key="--policy")
    column = policy.removeprefix("column:")
    for n in names:
        make_estimator(n)
    check_outputs(json_out, html_out, tracking=tracking)
    src = str(logs)
    if not src.startswith("table:") and not logs.exists():
        raise ConfigError(f"logs not found: {logs}{did_you_mean(logs)}", key="--logs")
    if src.startswith("table:") and engine != "spark":
        raise ConfigError("table:NAME needs --engine spark", key="--logs")
    kw = {"policy_column": column, "bootstrap": bootstrap, "confidence": confidence,
          "seed": seed}
    result = ope_spark(src, names, **kw) if engine == "spark" else \
        ope_stream(src, names, **kw)  # type: ignore[arg-type]
    config = {"logs": src, "policy": policy, "estimators": names, "bootstrap": bootstrap,
              "confidence": confidence, "seed": seed, "engine": engine}
    with track("ope", config=config, inputs={"logs": src}, store=tracking) as run:
        run.log_metrics({f"{e['estimator']}.{k}": getattr(e, k) for e in result.estimates
                         for k in ("estimate", "ci_low", "ci_high")})
        write_outputs(result, json_out, html_out, run=run, what="off-policy estimates")
    console.print(result.rich_table())
