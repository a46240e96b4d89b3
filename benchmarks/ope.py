"""Off-policy evaluation benchmarks: speed and agreement with OBP, and the OBD validation.

    python benchmarks/ope.py speed [--n 1000000]   # time per estimate vs OBP, same values
    python benchmarks/ope.py obd [--runs 30]        # relative error on the Open Bandit sample
    python benchmarks/ope.py sim [--reps 100]       # bias, RMSE, coverage in the simulator

``speed`` draws ``n`` synthetic logged rounds (10 actions, one position), saves them with
the same reward-model predictions and action distribution, and times each estimator's
point estimate (and a 100-resample bootstrap interval) in recscope and in the Open Bandit
Pipeline (``obp``), which needs Python < 3.11 and so runs in its own environment
(``OBP_PYTHON``, default ``benchmarks/out/obp-venv/bin/python``, made by
``bash benchmarks/setup_obp_env.sh``).
``obp`` imports torch at start-up for its neural policy learners only; this machine has
no torch for Python 3.10, so the OBP side runs with a small stand-in ``torch`` module on
its path (none of the estimators compared touch torch). It prints both times, their ratio
and the largest absolute difference of the estimates.

``obd`` reproduces OBP's "evaluating off-policy estimators" protocol on the OBD sample:
the evaluation policy's value is estimated from the other policy's log, on 30 bootstrap
resamples of that log (reward model refitted on each: logistic regression, 3-fold
cross-fitting with the copies of one original round kept in one fold), and compared with
the evaluation policy's on-policy click rate.
Heavy: run under ``flock /tmp/recscope-heavy.lock``.

``sim`` validates the estimators in the simulated platform
(:class:`recscope.ope.simulated.SimulatedHomeFeed`): ``--reps`` fresh logs of ``--n``
top-slot home-feed requests from the built-in world's logging policy, the candidate an ALS
component fitted on the world's click history (softmax, ``--beta``; ``inf`` is its
deterministic top-1), against the candidate's exact true click rate. It prints bias, RMSE
and 95% bootstrap-interval coverage per estimator, with a cross-fitted logistic reward
model (misspecified: additive in user and item features) and with the true click
probabilities.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from recscope.ope.estimators import Inputs, make_estimator  # noqa: E402
from recscope.ope.feedback import LoggedFeedback  # noqa: E402
from recscope.ope.policies import ActionDist, from_log, uniform  # noqa: E402
from recscope.ope.reward import RewardModel  # noqa: E402
from recscope.ope.synthetic import SyntheticBandit  # noqa: E402

OBP_PYTHON = os.environ.get(
    "OBP_PYTHON", str(ROOT / "benchmarks" / "out" / "obp-venv" / "bin" / "python"))  # setup_obp_env.sh
DATA = Path(os.environ.get("RECSCOPE_DATA", ROOT.parent / "shared" / "data"))
TAU, LAMBDA = 5.0, 10.0  # fixed Switch-DR / DR-OS hyperparameters for the like-for-like run
OURS = ["dm", "ips", "snips", "dr", "sndr", f"switch-dr:{TAU:g}", f"dr-os:{LAMBDA:g}"]

_TORCH_STUB = {
    "torch/__init__.py": "class Tensor: pass\nlong = float32 = float64 = None\n"
                         "def _na(*a, **k): raise RuntimeError('torch stand-in')\n"
                         "from_numpy = tensor = arange = manual_seed = var = sum = log = _na\n"
                         "exp = clamp = cat = _na\nfrom . import nn, optim, utils\n",
    "torch/nn/__init__.py": "class Module: pass\nfrom . import functional\n",
    "torch/nn/functional.py": "def mse_loss(*a, **k): raise RuntimeError('torch stand-in')\n",
    "torch/optim/__init__.py": "class Optimizer: pass\n",
    "torch/utils/__init__.py": "from . import data\n",
    "torch/utils/data/__init__.py": "class Dataset: pass\nclass DataLoader: pass\n"
                                    "def random_split(*a, **k): raise RuntimeError('stand-in')\n",
}

_OBP_SIDE = r'''
import json, sys, time, numpy as np
from obp.ope import (DirectMethod, InverseProbabilityWeighting as IPW,
    SelfNormalizedInverseProbabilityWeighting as SNIPW, DoublyRobust, SelfNormalizedDoublyRobust,
    SwitchDoublyRobust, DoublyRobustWithShrinkage)
import obp
z = np.load(sys.argv[1])
tau, lam, reps = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ad = z["action_dist"]; q = z["q_hat"]
kw = dict(reward=z["reward"], action=z["action"], position=z["position"], pscore=z["pscore"],
          action_dist=ad, estimated_rewards_by_reg_model=q)
ests = {"dm": DirectMethod(), "ips": IPW(), "snips": SNIPW(), "dr": DoublyRobust(),
        "sndr": SelfNormalizedDoublyRobust(), "switch-dr": SwitchDoublyRobust(lambda_=tau),
        "dr-os": DoublyRobustWithShrinkage(lambda_=lam)}
out = {"version": obp.__version__}
for name, e in ests.items():
    args = {k: v for k, v in kw.items() if not (name == "dm" and k in ("pscore", "reward"))}
    if name in ("ips", "snips"):
        args.pop("estimated_rewards_by_reg_model")
    times = []
    for _ in range(reps):
        t = time.perf_counter(); v = e.estimate_policy_value(**args); times.append(time.perf_counter() - t)
    t = time.perf_counter(); e.estimate_interval(**args, n_bootstrap_samples=100, random_state=0)
    out[name] = {"value": float(v), "time": min(times), "ci_time": time.perf_counter() - t}
print(json.dumps(out))
'''


def _run_obp(npz: Path, reps: int) -> dict[str, object] | None:
    if not Path(OBP_PYTHON).exists():
        print(f"OBP environment not found at {OBP_PYTHON}: OBP side skipped")
        return None
    with tempfile.TemporaryDirectory() as stub:
        for rel, text in _TORCH_STUB.items():
            path = Path(stub) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        env = {**os.environ, "PYTHONPATH": stub}
        res = subprocess.run([OBP_PYTHON, "-c", _OBP_SIDE, str(npz), str(TAU), str(LAMBDA),
                              str(reps)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print("OBP side failed:\n" + res.stderr[-2000:])
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def speed(n: int, reps: int) -> None:
    """Time per estimate on ``n`` synthetic rounds, recscope vs OBP, and the values' agreement."""
    env = SyntheticBandit(n_actions=10, dim=5, seed=0)
    fb, q_true = env.log(n, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    q_hat = np.clip(q_true + rng.normal(0, 0.05, q_true.shape), 0, 1)  # an imperfect model
    dist = env.target(fb)
    ours: dict[str, dict[str, float]] = {}
    for spec in OURS:
        est = make_estimator(spec)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            value = est.point(Inputs(fb, dist, q_hat))
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        est.run(Inputs(fb, dist, q_hat), n_bootstrap=100, seed=0)
        ours[spec.split(":")[0]] = {"value": value, "time": min(times),
                                    "ci_time": time.perf_counter() - t}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "feedback.npz"
        np.savez(npz, reward=fb.reward, action=fb.action, position=fb.position,
                 pscore=fb.pscore, action_dist=dist.probs, q_hat=q_hat[:, :, None])
        obp = _run_obp(npz, reps)
    print(f"\n{n:,} logged rounds, 10 actions; best of {reps} runs; CI = 100 bootstrap "
          "resamples")
    print(f"{'estimator':<10} {'recscope s':>11} {'obp s':>9} {'ratio':>7} {'CI recscope':>12} "
          f"{'CI obp':>8} {'ratio':>7} {'|diff|':>9}")
    for name, mine in ours.items():
        theirs = obp.get(name) if obp else None
        if isinstance(theirs, dict):
            print(f"{name:<10} {mine['time']:>11.4f} {theirs['time']:>9.4f} "
                  f"{theirs['time'] / mine['time']:>6.1f}x {mine['ci_time']:>12.3f} "
                  f"{theirs['ci_time']:>8.3f} {theirs['ci_time'] / mine['ci_time']:>6.1f}x "
                  f"{abs(mine['value'] - theirs['value']):>9.1e}")
        else:
            print(f"{name:<10} {mine['time']:>11.4f} {'-':>9} {'-':>7} {mine['ci_time']:>12.3f}")
    if obp:
        print(f"(ratio = obp time / recscope time; obp {obp['version']})")
        worst = max(abs(ours[k]["value"] - obp[k]["value"]) for k in ("ips", "snips", "dr"))  # type: ignore[index]
        print(f"largest |recscope - obp| for IPS, SNIPS, DR: {worst:.2e} "
              f"({'within' if worst <= 1e-9 else 'OUTSIDE'} 1e-9)")


def _obp_bts_table(campaign: str) -> np.ndarray | None:
    """OBP's own BTS action distribution (ZOZOTOWN prior re-simulated), for comparison."""
    code = ("import sys, numpy as np\nfrom obp.policy import BernoulliTS\n"
            "p = BernoulliTS(n_actions=int(sys.argv[1]), len_list=3, is_zozotown_prior=True, "
            "campaign=sys.argv[2], random_state=12345)\n"
            "np.save(sys.argv[3], p.compute_batch_action_dist(n_sim=100000)[0])\n")
    if not Path(OBP_PYTHON).exists():
        return None
    n_actions = {"all": 80, "men": 34, "women": 46}[campaign]
    with tempfile.TemporaryDirectory() as stub:
        for rel, text in _TORCH_STUB.items():
            path = Path(stub) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        out = Path(stub) / "ad.npy"
        res = subprocess.run([OBP_PYTHON, "-c", code, str(n_actions), campaign, str(out)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": stub})
        if res.returncode != 0:
            print("OBP BTS simulation failed:\n" + res.stderr[-1000:])
            return None
        return np.load(out)


def obd(runs: int, campaigns: list[str], estimators: list[str]) -> None:
    """Relative estimation error over ``runs`` bootstrap resamples, both directions."""
    from recscope.data.loaders import load_obd

    print(f"OBD sample: {runs} bootstrap resamples of the logging policy's log; reward model "
          "logistic regression, 3-fold cross-fitting; error = |estimate - on-policy| / on-policy")
    for campaign in campaigns:
        logs = {p: LoggedFeedback.from_interactions(load_obd(DATA / "obd" / p / campaign))
                for p in ("random", "bts")}
        settings = [("bts", "random", "harmonic"), ("random", "bts", None)]
        if campaign == "all":
            settings.insert(1, ("bts", "random", "obp-prior"))
        for target, behaviour, method in settings:
            fb = logs[behaviour]
            truth = logs[target].on_policy_value()
            if target == "random":
                dist = uniform(fb)
            elif method == "obp-prior":
                table = _obp_bts_table(campaign)
                if table is None:
                    continue
                dist = ActionDist.context_free(table, fb.n_rounds, "obp-bts-prior")
            else:
                dist = from_log(logs["bts"], fb, method=method)  # type: ignore[arg-type]
            rng = np.random.default_rng(12345)
            errs: dict[str, list[float]] = {e: [] for e in estimators}
            t0 = time.perf_counter()
            for b in range(runs):
                rows = rng.integers(0, fb.n_rounds, fb.n_rounds)
                sub = fb.take(rows)
                q = RewardModel(kind="logistic", n_folds=3, seed=b).fit_predict(sub, groups=rows)
                inp = Inputs(sub, dist.take(rows), q)
                for e in estimators:
                    v = make_estimator(e).point(inp)
                    errs[e].append(abs(v - truth) / truth)
            label = f"{campaign}: {target} from {behaviour} log"
            if method:
                label += f" (policy: {method})"
            info = dist.info.get("self_weight_mean")
            print(f"\n{label}; on-policy {truth:.4f}; {time.perf_counter() - t0:.0f}s"
                  + (f"; self-weight mean {info:.3f}" if info is not None else ""))
            for e in estimators:
                a = np.asarray(errs[e])
                print(f"  {e:<10} {a.mean():.3f} ± {a.std(ddof=1):.3f}")


def sim(reps: int, n: int, beta: float, world_seed: int, n_bootstrap: int,
        reward_models: list[str]) -> None:
    """Bias, RMSE and coverage of each estimator against the simulator's true value."""
    from recscope.ope.simulated import SimulatedHomeFeed, reward_predictions, small_world_config
    from recscope.ope.synthetic import check_against_truth

    t0 = time.perf_counter()
    env = SimulatedHomeFeed(small_world_config(world_seed), beta=beta, seed=world_seed)
    d = env.describe()
    on = env.on_policy(1_000_000, np.random.default_rng(world_seed + 7))
    print(f"world seed {world_seed}: {d['n_users']} users, {d['n_items']} pins, pool "
          f"{d['pool_size']}; candidate {d['candidate']} softmax beta={beta:g}; "
          f"built in {time.perf_counter() - t0:.1f}s")
    print(f"true value {d['true_value']:.5f} (on-policy simulation of 1M requests: "
          f"{on.mean():.5f} ± {on.std() / np.sqrt(len(on)):.5f}); logging policy "
          f"{d['logging_value']:.5f}")
    ests = ["dm", "ips", "clipped-ips:10", "snips", "dr", "sndr", f"switch-dr:{TAU:g}",
            f"dr-os:{LAMBDA:g}"]
    for kind in reward_models:
        t1 = time.perf_counter()
        names = [e for e in ests if kind != "none" or e in ("ips", "clipped-ips:10", "snips")]
        res = check_against_truth(env, names, n=n, n_reps=reps, n_bootstrap=n_bootstrap,
                                  seed=world_seed + 1, q_hat=reward_predictions(kind))
        print(f"\nreward model {kind}: {reps} logs of {n} rounds, {n_bootstrap} bootstrap "
              f"resamples, {time.perf_counter() - t1:.0f}s")
        print(f"  {'estimator':<16} {'bias':>9} {'rel bias':>9} {'RMSE':>8} {'rel RMSE':>9} "
              f"{'coverage':>9} {'bias/SE':>8}")
        for e in res.bias:
            sd = np.sqrt(max(res.rmse[e] ** 2 - res.bias[e] ** 2, 0.0))
            z = res.bias[e] / (sd / np.sqrt(reps)) if sd > 0 else float("nan")
            print(f"  {e:<16} {res.bias[e]:>9.5f} {res.bias[e] / res.truth:>9.3f} "
                  f"{res.rmse[e]:>8.5f} {res.rmse[e] / res.truth:>9.3f} {res.coverage[e]:>9.2f} "
                  f"{z:>8.1f}")
        print("  (bias/SE: bias over the standard error of the mean over repetitions)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--n", type=int, default=1_000_000)
    s.add_argument("--reps", type=int, default=3)
    o = sub.add_parser("obd")
    o.add_argument("--runs", type=int, default=30)
    o.add_argument("--campaign", action="append", default=None)
    o.add_argument("--estimator", action="append", default=None)
    m = sub.add_parser("sim")
    m.add_argument("--reps", type=int, default=100)
    m.add_argument("--n", type=int, default=3000)
    m.add_argument("--beta", type=float, default=1.5)
    m.add_argument("--world-seed", type=int, default=0)
    m.add_argument("--bootstrap", type=int, default=200)
    m.add_argument("--reward-model", action="append", default=None,
                   help="logistic, lightgbm, oracle (repeatable; default logistic, oracle)")
    args = ap.parse_args()
    if args.cmd == "speed":
        speed(args.n, args.reps)
    elif args.cmd == "sim":
        sim(args.reps, args.n, args.beta, args.world_seed, args.bootstrap,
            args.reward_model or ["logistic", "oracle"])
    else:
        obd(args.runs, args.campaign or ["all", "men", "women"],
            args.estimator or ["dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"])


if __name__ == "__main__":
    main()
