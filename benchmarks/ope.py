"""Off-policy evaluation benchmarks: speed and agreement with OBP, and the OBD validation.

    python benchmarks/ope.py speed [--n 1000000]   # time per estimate vs OBP, same values
    python benchmarks/ope.py obd [--runs 30]        # relative error on the Open Bandit sample
    python benchmarks/ope.py sim [--reps 100]       # bias, RMSE, coverage in the simulator
    python benchmarks/ope.py floor [--runs 30]      # oracle error floor on the OBD sample
    python benchmarks/ope.py semisynth              # semi-synthetic OBD at 10k and full size

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

``floor`` measures, on the same 30 bootstrap resamples of ``random/all`` that ``obd``
uses, the relative error of an oracle that is exactly right on the full sample and whose
estimate moves with the resample's clicks: ``truth × C_b / C`` with ``C`` the clicks
(plain count) or the BTS-weighted clicks ``Σ w·r`` (IPS weighting) of the full log and
``C_b`` the same in resample ``b``. It also resamples the BTS log the same way, which shows
how far its on-policy click rate (the "truth", 42 clicks) moves by sampling alone.

``semisynth`` runs the ``obd`` protocol (same estimators, logistic reward model, 3-fold
cross-fitting, bootstrap resamples; :func:`recscope.ope.semisynthetic.resampled_estimates`,
which ``obd`` also uses) on semi-synthetic OBD logs
(:class:`recscope.ope.semisynthetic.SemiSyntheticOBD`: the real contexts, positions and
items of ``random/all``, uniform-random logging, clicks from a model calibrated to the
sample's click rates) at each ``--scale N:RUNS`` (default 10,000 rounds and the full
random/all size, 1,374,327 rounds, both with 30 resamples; the full size takes about 60 s
per resample on 2 cores, 31 min; pass ``--scale 1374327:10`` for a quicker look), against the exact true value of the rebuilt BTS policy and against the
on-policy click rate of one simulated BTS log of the full BTS/all size (12,168,084 rounds).
Heavy (about 5 GB at full size): run under ``flock /tmp/recscope-heavy.lock``.

``sim`` validates the estimators in the simulated platform
(:class:`recscope.sim.ope_check.SimulatedHomeFeed`): ``--reps`` fresh logs of ``--n``
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

from recscope.cli.common import progress  # noqa: E402
from recscope.ope.action_dists import ActionDist, from_log, uniform  # noqa: E402
from recscope.ope.estimators import Inputs, make_estimator  # noqa: E402
from recscope.ope.feedback import LoggedFeedback  # noqa: E402
from recscope.ope.semisynthetic import SemiSyntheticOBD, resampled_estimates  # noqa: E402
from recscope.ope.synthetic import SyntheticBandit  # noqa: E402

OBP_PYTHON = os.environ.get(
    "OBP_PYTHON", str(ROOT / "benchmarks" / "out" / "obp-venv" / "bin" / "python"))  # setup_obp_env.sh
DATA = Path(os.environ.get("RECSCOPE_DATA", ROOT.parent / "shared" / "data"))
OBD_SEED = 12345  # the bootstrap resamples of the obd protocol (and of floor)
OBD_FULL = {"random": 1_374_327, "bts": 12_168_084}  # full OBD "all" log sizes (paper, Table 1)
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
            t0 = time.perf_counter()
            values = resampled_estimates(fb, dist, estimators, runs=runs, seed=OBD_SEED)
            errs = {e: np.abs(v - truth) / truth for e, v in values.items()}
            label = f"{campaign}: {target} from {behaviour} log"
            if method:
                label += f" (policy: {method})"
            info = dist.info.get("self_weight_mean")
            print(f"\n{label}; on-policy {truth:.4f}; {time.perf_counter() - t0:.0f}s"
                  + (f"; self-weight mean {info:.3f}" if info is not None else ""))
            for e in estimators:
                a = np.asarray(errs[e])
                print(f"  {e:<10} {a.mean():.3f} ± {a.std(ddof=1):.3f}")


def _load_all(campaign: str) -> tuple[LoggedFeedback, LoggedFeedback]:
    from recscope.data.loaders import load_obd

    return tuple(LoggedFeedback.from_interactions(load_obd(DATA / "obd" / p / campaign))  # type: ignore[return-value]
                 for p in ("random", "bts"))


def _mean_sd(a: np.ndarray) -> str:
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if a.size > 1 else f"{a.mean():.3f}"


def oracle_errors(fb: LoggedFeedback, weight: np.ndarray, runs: int,
                  seed: int = OBD_SEED) -> np.ndarray:
    """|C_b / C − 1| over ``runs`` resamples: C = Σ weight·reward on the log, C_b on resample b.

    The relative error of an oracle exactly right on the whole log whose estimate scales
    with the (weighted) clicks it sees; the rows are the ``obd`` protocol's resamples.
    """
    rng = np.random.default_rng(seed)
    wr = weight * fb.reward
    total = wr.sum()
    return np.array([abs(wr[rng.integers(0, fb.n_rounds, fb.n_rounds)].sum() / total - 1.0)
                     for _ in range(runs)])


def floor(runs: int, campaign: str) -> None:
    """The error floor on the OBD sample: an oracle's error over the obd protocol's resamples."""
    rnd, bts = _load_all(campaign)
    dist = from_log(bts, rnd)
    truth = bts.on_policy_value()
    w = dist.logged(rnd) / rnd.pscore
    clicks, bclicks = int(rnd.reward.sum()), int(bts.reward.sum())
    count = oracle_errors(rnd, np.ones(rnd.n_rounds), runs)
    ips = oracle_errors(rnd, w, runs)
    onp = oracle_errors(bts, np.ones(bts.n_rounds), runs)
    print(f"campaign {campaign}: random log {rnd.n_rounds:,} rounds, {clicks} clicks; BTS log "
          f"{bts.n_rounds:,} rounds, {bclicks} clicks, on-policy {truth:.4f}; {runs} bootstrap "
          f"resamples (seed {OBD_SEED}, the obd protocol's)")
    print("oracle exactly right on the full random log, estimate_b = truth × C_b / C "
          "(relative error |C_b / C − 1|, mean ± std):")
    print(f"  plain click count            {_mean_sd(count)}  (max {count.max():.3f})")
    print(f"  IPS-weighted clicks (BTS)    {_mean_sd(ips)}  (max {ips.max():.3f}; weight mean "
          f"{w.mean():.3f}, max {w.max():.2f})")
    print(f"the truth's own sampling error: BTS on-policy rate over the same resamples of the "
          f"BTS log {_mean_sd(onp)} (relative standard error 1/sqrt(clicks) = "
          f"{1 / np.sqrt(bclicks):.3f})")
    many = 20_000
    e_count = oracle_errors(rnd, np.ones(rnd.n_rounds), many, seed=1).mean()
    e_ips = oracle_errors(rnd, w, many, seed=1).mean()
    print(f"the same over {many:,} resamples (its expectation, not the luck of 30 draws): "
          f"count {e_count:.3f}, IPS-weighted {e_ips:.3f}")
    best = min(count.mean(), ips.mean())
    verdict = ("ABOVE the goal 0.12: even an estimator exactly right on the full sample, if its "
               "estimate scales with the clicks it sees, misses the goal on these resamples"
               if best > 0.12 else "below the goal 0.12")
    print(f"floor = {best:.3f} (expected {min(e_count, e_ips):.3f}), {verdict}")
    se_ips = (w * rnd.reward).std(ddof=1) / np.sqrt(rnd.n_rounds) / (w * rnd.reward).mean()
    se_truth = np.sqrt(truth * (1 - truth) / bts.n_rounds) / truth
    print(f"on the full (not resampled) sample, an unbiased IPS estimate has relative standard "
          f"error {se_ips:.3f} and the truth {se_truth:.3f}: expected |error| of an unbiased, "
          f"normal estimator against the measured truth sqrt(2/pi)*sqrt(se1^2+se2^2) = "
          f"{np.sqrt(2 / np.pi) * np.hypot(se_ips, se_truth):.3f}")
    n_full = OBD_FULL["random"] if campaign == "all" else None
    if n_full:
        exp = np.sqrt(2 / np.pi) / np.sqrt(n_full * rnd.on_policy_value())
        print(f"at the full random/all size ({n_full:,} rounds, same click rate, about "
              f"{n_full * rnd.on_policy_value():,.0f} clicks) the count oracle's expected error "
              f"is sqrt(2/pi)/sqrt(clicks) = {exp:.3f}")


def semisynth(scales: list[tuple[int, int]], n_logs: int, truth_n: int, seed: int,
              estimators: list[str], out: Path | None) -> None:
    """The obd protocol on semi-synthetic OBD logs at each (rounds, resamples) scale."""
    from recscope.io import write_json

    t0 = time.perf_counter()
    env = SemiSyntheticOBD.from_obd(DATA / "obd", "all", seed=seed)
    d = env.describe()
    exact = env.true_value()
    on_value, on_clicks = env.on_policy(truth_n, np.random.default_rng([seed, 1]))
    print(f"semi-synthetic OBD (campaign all): {d['population_rounds']:,} real context rows "
          f"({d['distinct_context_positions']} distinct context x position), "
          f"{d['n_items']} items x {d['len_list']} positions; uniform logging (propensity "
          f"1/{d['n_items']}); target = BTS rebuilt from bts/all (harmonic)")
    print(f"calibrated: uniform policy {env.logging_value():.5f}, BTS exact {exact:.5f} (real "
          f"sample: 0.0038, 0.0042); intercept {d['intercept']:.3f}, item effect gamma "
          f"{d['gamma']:.3f}, user / interaction logit sd {d['user_scale']} / "
          f"{d['interaction_scale']}, max click probability {d['max_click_prob']:.3f}")
    rel = (on_value - exact) / exact
    print(f"on-policy truth: simulated BTS log of {truth_n:,} rounds: {on_value:.5f} "
          f"({on_clicks:,} clicks; {rel:+.4f} relative to exact) [{time.perf_counter() - t0:.0f}s]")
    report: dict[str, object] = {"env": d, "exact": exact, "on_policy": on_value,
                                 "on_policy_rounds": truth_n, "scales": []}
    for n, runs in scales:
        t1 = time.perf_counter()
        est: dict[str, list[np.ndarray]] = {e: [] for e in estimators}
        pair_err: dict[str, list[np.ndarray]] = {e: [] for e in estimators}
        floors: list[tuple[float, float]] = []
        per_log: list[dict[str, float]] = []
        clicks = []
        paired: list[float] = []  # on-policy rate of a BTS log of the same n, one per log
        with progress() as bar:
            task = bar.add_task(f"n={n:,}: {n_logs} log(s) x {runs} resamples",
                                total=n_logs * runs)
            for j in range(n_logs):
                fb, _ = env.log(n, np.random.default_rng([seed, n, j]), return_q=False)
                clicks.append(int(fb.reward.sum()))
                paired.append(env.on_policy(n, np.random.default_rng([seed, n, j, 1]))[0])
                dist = env.target(fb)
                w = dist.logged(fb) / fb.pscore
                floors.append((oracle_errors(fb, np.ones(n), runs, OBD_SEED + j).mean(),
                               oracle_errors(fb, w, runs, OBD_SEED + j).mean()))
                vals = resampled_estimates(fb, dist, estimators, runs=runs, seed=OBD_SEED + j,
                                           on_resample=lambda _b, t=task: bar.advance(t))
                for e in estimators:
                    est[e].append(vals[e])
                    pair_err[e].append(np.abs(vals[e] - paired[-1]) / paired[-1])
                per_log.append({e: float(np.mean(np.abs(vals[e] - exact) / exact))
                                for e in estimators})
        fl = np.asarray(floors)
        print(f"\nn = {n:,} rounds: {n_logs} simulated log(s) ({', '.join(map(str, clicks))} "
              f"clicks), {runs} bootstrap resamples each, logistic reward model with 3-fold "
              f"cross-fitting refitted on every resample; {time.perf_counter() - t1:.0f}s")
        print(f"  oracle floor (as `floor`): count {fl[:, 0].mean():.3f}, IPS-weighted "
              f"{fl[:, 1].mean():.3f}")
        print(f"  paired BTS log of {n:,} rounds per simulated log (as the real sample pairs "
              f"10,000 random with 10,000 BTS rounds): on-policy "
              f"{', '.join(f'{p:.5f}' for p in paired)}")
        print(f"  {'estimator':<10} {'vs exact truth':>16} {'vs on-policy':>16} "
              f"{'vs paired':>16} {'rel. bias':>10}"
              + ("  per-log mean error vs exact" if n_logs > 1 else ""))
        rows = {}
        for e in estimators:
            v = np.concatenate(est[e])
            ex, on = np.abs(v - exact) / exact, np.abs(v - on_value) / on_value
            pe = np.concatenate(pair_err[e])
            rows[e] = {"vs_exact_mean": float(ex.mean()), "vs_exact_std": float(ex.std(ddof=1)),
                       "vs_on_policy_mean": float(on.mean()),
                       "vs_on_policy_std": float(on.std(ddof=1)),
                       "vs_paired_mean": float(pe.mean()), "vs_paired_std": float(pe.std(ddof=1)),
                       "relative_bias": float(v.mean() / exact - 1),
                       "per_log": [p[e] for p in per_log]}
            logs = (" " + " ".join(f"{p[e]:.3f}" for p in per_log)) if n_logs > 1 else ""
            print(f"  {e:<10} {_mean_sd(ex):>16} {_mean_sd(on):>16} {_mean_sd(pe):>16} "
                  f"{v.mean() / exact - 1:>+10.3f} {logs}")
        best = min(rows, key=lambda e: rows[e]["vs_exact_mean"])
        print(f"  best: {best} {rows[best]['vs_exact_mean']:.3f} vs exact "
              f"({'meets' if rows[best]['vs_exact_mean'] <= 0.12 else 'misses'} the goal 0.12)")
        report["scales"].append({"n": n, "runs": runs, "logs": n_logs,  # type: ignore[attr-defined]
                                 "clicks": clicks, "paired_on_policy": paired,
                                 "oracle_floor_count": float(fl[:, 0].mean()),
                                 "oracle_floor_ips": float(fl[:, 1].mean()),
                                 "estimators": rows, "seconds": time.perf_counter() - t1})
    if out is not None:
        write_json(out, report)
        print(f"\nwrote {out}")


def sim(reps: int, n: int, beta: float, world_seed: int, n_bootstrap: int,
        reward_models: list[str]) -> None:
    """Bias, RMSE and coverage of each estimator against the simulator's true value."""
    from recscope.ope.synthetic import check_against_truth
    from recscope.sim.ope_check import SimulatedHomeFeed, reward_predictions, small_world_config

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


def _scale(text: str) -> tuple[int, int]:
    """``N:RUNS`` (rounds per simulated log, bootstrap resamples), both positive."""
    try:
        n, runs = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N:RUNS, got {text!r}") from None
    if n <= 0 or runs <= 1:
        raise argparse.ArgumentTypeError(f"need N > 0 and RUNS > 1, got {text!r}")
    return n, runs


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
    f = sub.add_parser("floor")
    f.add_argument("--runs", type=int, default=30)
    f.add_argument("--campaign", default="all", choices=["all", "men", "women"])
    y = sub.add_parser("semisynth")
    y.add_argument("--scale", action="append", default=None, metavar="N:RUNS", type=_scale,
                   help="rounds per simulated log and bootstrap resamples (repeatable; default "
                        f"10000:30 and {OBD_FULL['random']}:30)")
    y.add_argument("--logs", type=int, default=1, help="simulated logs per scale")
    y.add_argument("--truth-n", type=int, default=OBD_FULL["bts"],
                   help="rounds of the simulated on-policy BTS log")
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--estimator", action="append", default=None)
    y.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "speed":
        speed(args.n, args.reps)
    elif args.cmd == "sim":
        sim(args.reps, args.n, args.beta, args.world_seed, args.bootstrap,
            args.reward_model or ["logistic", "oracle"])
    elif args.cmd == "floor":
        floor(args.runs, args.campaign)
    elif args.cmd == "semisynth":
        scales = args.scale or [(10_000, 30), (OBD_FULL["random"], 30)]
        semisynth(scales, args.logs, args.truth_n, args.seed,  # type: ignore[arg-type]
                  args.estimator or ["dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"],
                  args.json)
    else:
        obd(args.runs, args.campaign or ["all", "men", "women"],
            args.estimator or ["dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"])


if __name__ == "__main__":
    main()
