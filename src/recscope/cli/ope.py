"""``recscope ope``: estimate a policy's value from logged bandit feedback.

``--policy`` is a saved model directory (scored into a deterministic, softmax or
epsilon-greedy ranking policy), ``uniform``, or ``log:PATH`` (the policy that produced the
log at PATH, known through its logged propensities; its observed mean reward is reported
as ``on_policy``). The JSON gives, per estimator, ``estimate``, ``ci_low``, ``ci_high`` and
``diagnostics``. The run is logged to tracking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recscope.errors import ConfigError


def ope(
    logs: Annotated[Path, typer.Option("--logs", help="Logged feedback: a canonical file "
                                       "(position, propensity) or a data set folder (OBD).")],
    policy: Annotated[str, typer.Option("--policy", help="MODEL_DIR, 'uniform' or log:PATH.")],
    estimator: Annotated[list[str] | None, typer.Option(
        "--estimator", "-e", help="Estimator (repeatable): dm, ips, clipped-ips[:M], snips, "
        "dr, sndr, switch-dr[:tau], dr-os[:lambda], iips, rips, sips, cascade-dr.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")]
    = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
    reward_model: Annotated[str, typer.Option(help="logistic, lightgbm or ridge.")] = "logistic",
    n_folds: Annotated[int, typer.Option(help="Cross-fitting folds of the reward model.")] = 3,
    n_bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 500,
    alpha: Annotated[float, typer.Option(help="1 - confidence level.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    policy_kind: Annotated[str, typer.Option(help="For MODEL_DIR: deterministic, softmax or "
                                             "epsilon-greedy.")] = "deterministic",
    temperature: Annotated[float, typer.Option(help="Softmax temperature.")] = 1.0,
    epsilon: Annotated[float, typer.Option(help="Epsilon of epsilon-greedy.")] = 0.1,
    log_method: Annotated[str, typer.Option(help="For log:PATH: harmonic, nearest or "
                                            "frequency (see docs/ope.md).")] = "harmonic",
    out_dir: Annotated[Path | None, typer.Option(help="Tracking store folder (default "
                                                 "recscope-out or MLFLOW_TRACKING_URI).")] = None,
) -> None:
    """Estimate a policy's value from logs with off-policy estimators."""
    from recscope.cli.common import console, file_fingerprint, progress
    from recscope.data.loaders import load
    from recscope.ope import policies as pol
    from recscope.ope.estimators import make_estimator
    from recscope.ope.evaluate import DEFAULT_ESTIMATORS, evaluate
    from recscope.ope.feedback import LoggedFeedback
    from recscope.ope.reward import RewardModel
    from recscope.tracking import track

    if not (policy == "uniform" or policy.startswith("log:") or Path(policy).is_dir()):
        raise ConfigError(f"--policy must be a model directory, 'uniform' or log:PATH; "
                          f"{policy!r} is none of these", key="policy")
    names = list(estimator or DEFAULT_ESTIMATORS)
    ests = [make_estimator(n) for n in names]
    rm = RewardModel(kind=reward_model, n_folds=n_folds, seed=seed)  # type: ignore[arg-type]
    inputs = {"logs": file_fingerprint(logs)}
    config = {"logs": str(logs), "policy": policy, "estimators": names,
              "reward_model": reward_model, "n_folds": n_folds, "n_bootstrap": n_bootstrap,
              "alpha": alpha, "seed": seed, "policy_kind": policy_kind,
              "temperature": temperature, "epsilon": epsilon, "log_method": log_method}
    with track("ope", config=config, inputs=inputs, store=out_dir) as run, progress() as bar:
        task = bar.add_task("loading logs", total=3)
        fb = LoggedFeedback.from_interactions(load(logs), source=str(logs))
        on_policy = None
        if policy == "uniform":
            dist = pol.uniform(fb)
        elif policy.startswith("log:"):
            src_path = Path(policy.removeprefix("log:"))
            inputs["policy_log"] = file_fingerprint(src_path)
            run.set_tags({"policy_log": str(src_path)})
            source = LoggedFeedback.from_interactions(load(src_path), source=str(src_path))
            dist = pol.from_log(source, fb, method=log_method)  # type: ignore[arg-type]
            on_policy = source.on_policy_value()
        else:
            dist = pol.from_component(policy, fb, kind=policy_kind,  # type: ignore[arg-type]
                                      temperature=temperature, epsilon=epsilon, seed=seed)
        bar.update(task, advance=1, description="fitting reward model")
        q_hat = rm.fit_predict(fb) if any(e.needs_model for e in ests) else None
        bar.update(task, advance=1, description="estimating")
        result = evaluate(fb, dist, ests, q_hat=q_hat, n_bootstrap=n_bootstrap, alpha=alpha,
                          seed=seed, on_policy=on_policy, logs=str(logs))
        if q_hat is not None:
            result.reward_model = rm.describe()
        bar.update(task, advance=1, description="done")
        metrics = {f"{e.estimator}.estimate": e.estimate for e in result.estimates}
        metrics.update({f"{e.estimator}.ci_low": e.ci_low for e in result.estimates})
        metrics.update({f"{e.estimator}.ci_high": e.ci_high for e in result.estimates})
        metrics.update({f"{k}.relative_error": v for k, v in result.relative_errors().items()})
        if on_policy is not None:
            metrics["on_policy"] = on_policy
        run.log_metrics(metrics)
        run.log_dict(result.to_dict(), "ope.json")
        for out in (json_out, html_out):
            if out is not None:
                result.save(out)
                run.log_artifact(out)
    console.print(result.rich_table())
