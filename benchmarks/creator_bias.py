"""Why the creator-side design is biased with both channels off (issue 14), and what a
two-sided (budget-split) design does instead.

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/creator_bias.py collect \\
        --setting off-nocarry --start 0 --reps 100
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/creator_bias.py collect \\
        --setting off-nocarry --no-related --start 0 --reps 100
    .venv/bin/python benchmarks/creator_bias.py report

``collect`` runs, per repetition of a setting of ``benchmarks/interference.py`` (the same
world, seeds, policies and assignment salt), the two truth replays (all control, all
treatment), the creator design's run (:class:`recscope.sim.designs.CreatorSplit`: every
slate merges the control ranking's pins of control creators with the treatment
ranking's pins of treatment creators by rank, ``--depth`` × k candidates per ranking;
``interference.py`` uses 2) and a two-sided run (users AND creators split by the same
salt; each user's slates are her arm's stack over her arm's creators' pins only,
:class:`ArmCatalogue`: Liu et al., KDD 2021, "budget-split"). It stores every creator's
impressions, clicks and saves per surface (home feed, related pins, search) in each run,
and those of the creator design's run credited by origin (``split_by_origin``: a
related-pins slate counts for the creator whose pin started it,
:meth:`recscope.sim.designs.CreatorStats.credit`, as the creator design now analyses it;
``split`` credits every pin to its own creator, as the design did before).
``--no-related`` switches the related-pins surface off (a session's later requests go to
the home feed or search); ``--scale`` sets the world's size (0.1: 2,000 users, 1,000
pins, 150 creators).

``report`` decomposes, per setting, the creator design's CTR error (estimate − truth)
into what the merged run changes (estimate − oracle; the oracle is the same creators'
CTR in their own arm's global replay: the same creator-sampling noise, no merging) and
the ratio-of-sums bias of a random half of creators (the oracle's mean over re-drawn
creator splits − truth), the merged run's change per arm and surface, and the two-sided
design's error; and, for the creator split and the two-sided design, bias, coverage and
MDE (2.80 x the mean s.e.) per creator metric from their CR3 intervals (each creator its
own cluster, as ``analyze_design`` analyses the creator design) against the global
truth. Results: benchmarks/out/creator-bias.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interference  # the settings, world and policies of the validation

OUT = Path(__file__).resolve().parent / "out"
RECORDS = OUT / "creator-bias"
SURFACES = ("home_feed", "related", "search")
RUNS = ("control", "treatment", "split", "two_sided")
ATTRIBUTED = "split_by_origin"


class SurfaceStats:
    """Impressions, clicks and saves per surface and creator during a run (an
    ``observe`` callback of :meth:`recscope.sim.environment.Environment.run`)."""

    def __init__(self, item_creator: np.ndarray, n_creators: int) -> None:
        self.item_creator = item_creator
        self.n = n_creators
        self.totals = np.zeros((3, len(SURFACES), n_creators))  # [imp/clk/sav, surface, c]

    def __call__(self, obs: Any) -> None:
        r = obs.response
        s = SURFACES.index(obs.surface)
        c = self.item_creator[np.maximum(obs.items, 0)]
        valid = obs.items >= 0
        for j, mask in enumerate((r.shown, r.clicked, r.saved)):
            self.totals[j, s] += np.bincount(c[mask & valid], minlength=self.n)


class OriginStats(SurfaceStats):
    """Per-surface totals credited by origin (a related-pins slate counts for the
    creator whose pin started it: :meth:`recscope.sim.designs.CreatorStats.credit`, what
    the creator design now analyses)."""

    def __init__(self, item_creator: np.ndarray, n_creators: int, split: Any) -> None:
        from recscope.sim.designs import CreatorStats

        super().__init__(item_creator, n_creators)
        self.stats = CreatorStats(item_creator, n_creators, split=split)

    def __call__(self, obs: Any) -> None:
        r = obs.response
        s = SURFACES.index(obs.surface)
        c = self.stats.credit(obs)
        valid = obs.items >= 0
        for j, mask in enumerate((r.shown, r.clicked, r.saved)):
            self.totals[j, s] += np.bincount(c[mask & valid], minlength=self.n)


class Both:
    """Two observers of one run."""

    def __init__(self, *observers: Any) -> None:
        self.observers = observers

    def __call__(self, obs: Any) -> None:
        for o in self.observers:
            o(obs)


class ArmCatalogue:
    """A stack served over one arm's creators only: the stack's retrieval (home feed),
    seed neighbours (related) or topic heads (search) restricted to the arm's pins, the
    first ``pool`` of them (home feed) ranked by the stack's ranker with its
    Plackett-Luce noise, as :class:`recscope.sim.stacks.StackPolicy` serves the whole
    catalogue."""

    def __init__(self, stack: Any, keep: np.ndarray) -> None:
        self.stack, self.keep = stack, keep
        self.name = f"{stack.name}|arm catalogue"

    def __call__(self, users: np.ndarray, surface: str, k: int, context: Any) -> np.ndarray:
        from recscope.pipeline.stack import rank_candidates
        from recscope.sim.stacks import gumbel, slates_of

        p = self.stack
        if surface == "related":
            cand = p.index.related(context.seed_item)
            depth = cand.shape[1]
        elif surface == "search":
            cand = p.index.search(context.query_topic)
            depth = cand.shape[1]
        else:  # retrieve deep enough for `pool` of the arm's pins
            cand = np.asarray(p.retriever.candidates(users, 4 * p.pool, context))
            depth = p.pool
        ok = (cand >= 0) & self.keep[np.maximum(cand, 0)]
        order = np.argsort(~ok, axis=1, kind="stable")[:, :depth]
        cand = np.where(np.take_along_axis(ok, order, axis=1),
                        np.take_along_axis(cand, order, axis=1), -1)
        s = np.asarray(p.ranker.scores(users, cand, context), dtype=np.float64)
        if p.temperature > 0:
            s = s + p.temperature * gumbel(context.keys, s.shape[1], 1000)
        return slates_of(rank_candidates(cand, s, min(k, cand.shape[1]))[0], users.size, k)


class DeepSplit:
    """:class:`recscope.sim.designs.CreatorSplit` with ``depth`` × k candidates per
    ranking (the design uses 2)."""

    def __init__(self, control: Any, treatment: Any, item_arm: np.ndarray, depth: int) -> None:
        from recscope.sim.designs import CreatorSplit

        self.split = CreatorSplit(control, treatment, item_arm)
        self.depth = depth
        self.name = self.split.name

    def __call__(self, users: np.ndarray, surface: str, k: int, context: Any) -> np.ndarray:
        if self.depth == 2:
            return self.split(users, surface, k, context)
        from recscope.sim.stacks import slates_of

        out = self.split(users, surface, self.depth * k // 2, context)
        # the split of depth*k/2 slots over depth*k candidates, cut to k: the first k of
        # the merged order (both rankings' candidates are ``depth`` x k deep)
        return slates_of(out, users.size, k)


def collect(setting: str, start: int, reps: int, *, no_related: bool = False,
            scale: float = interference.SCALE, depth: int = 2) -> Path:
    """Append ``reps`` repetitions (seeds as in interference.py) to the setting's file."""
    from recscope.experiments.assignment import Experiment, assign
    from recscope.experiments.designs import DesignConfig
    from recscope.sim.designs import plan_design

    s = interference.SETTINGS[setting]
    sim, world = interference.setting_world(
        setting, scale, interference.NO_RELATED if no_related else None)
    tag = (setting + ("-norelated" if no_related else "")
           + (f"-scale{scale:g}" if scale != interference.SCALE else "")
           + (f"-depth{depth}" if depth != 2 else ""))
    days = s.get("days", interference.DAYS)
    RECORDS.mkdir(parents=True, exist_ok=True)
    path = RECORDS / f"{tag}-{start}.jsonl"
    for i in range(start, start + reps):
        t0 = time.perf_counter()
        seed = 10_000 + i
        env, pols, pre = interference.warm_start(world, sim, setting, seed)
        state = pre.state
        n = env.truth.n_users
        ic = np.asarray(env.item_creator, dtype=np.int64)
        exp = Experiment(name="design-compare", variants=("control", "treatment"),
                         salt=f"interference:{setting}:{seed}")
        plan = plan_design(env, DesignConfig(kind="creator"), exp, days=days,
                           start_us=env.start_us + state.day * 86_400_000_000, seed=seed)
        assert plan.creator_arm is not None
        item_arm = plan.creator_arm[ic]
        user_arm = np.array([1 if v == "treatment" else 0
                             for v in assign(np.arange(n, dtype=np.int64), exp)])
        stats = {r: SurfaceStats(ic, env.n_creators) for r in RUNS}
        for c, r in enumerate(("control", "treatment")):
            env.run(pols, days=days, arm=np.full(n, c, dtype=np.int64), state=state,
                    observe=stats[r])
        split = DeepSplit(pols[0], pols[1], item_arm, depth)
        by_origin = OriginStats(ic, env.n_creators, split.split)
        env.run([*pols, split], days=days, arm=plan.arm, state=state,
                novel=[False, True, False], observe=Both(stats["split"], by_origin))
        env.run([ArmCatalogue(pols[a], item_arm == a) for a in (0, 1)], days=days,
                arm=user_arm, state=state, observe=stats["two_sided"])
        rec = {"setting": tag, "rep": i, "arm": plan.creator_arm.tolist(),
               "user_share": float(user_arm.mean()),
               **{r: stats[r].totals.tolist() for r in RUNS},
               ATTRIBUTED: by_origin.totals.tolist()}
        with path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(tag, i, round(time.perf_counter() - t0, 2), flush=True)
    return path


def _ctr(t: np.ndarray, mask: np.ndarray, surface: int | None = None) -> float:
    """CTR of the pins of the creators in ``mask`` (on one surface, or all)."""
    imp = t[0].sum(axis=0) if surface is None else t[0, surface]
    clk = t[1].sum(axis=0) if surface is None else t[1, surface]
    d = imp[mask].sum()
    return float(clk[mask].sum() / d) if d else float("nan")


def _mean(t: np.ndarray, j: int, mask: np.ndarray) -> float:
    return float(t[j].sum(axis=0)[mask].mean())


def _summary(x: list[float]) -> dict[str, float]:
    a = np.asarray(x, dtype=float)
    se = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")
    return {"mean": float(a.mean()), "se": se, "t": float(a.mean() / se) if se else
            float("nan"), "sd": float(a.std(ddof=1)) if a.size > 1 else float("nan")}


_METRICS = {"ctr": (1, 0), "exposure": (0, None), "clicks_received": (1, None),
            "saves_received": (2, None)}
"""Creator metrics: (numerator, denominator) rows of a run's totals (None: per creator)."""


def _cr3(t: np.ndarray, treated: np.ndarray, metric: str) -> Any:
    """The creator design's analysis of one run: CR3 over creators (each its own
    cluster) with its Satterthwaite df, as ``analyze_design`` does."""
    from recscope.experiments.clustered import ArmStats, compare_arms

    y, d = _METRICS[metric]
    num = t[y].sum(axis=0)
    den = t[d].sum(axis=0) if d is not None else np.ones(num.size)
    arms = [ArmStats.from_clusters(num[m], den[m]) for m in (~treated, treated)]
    return compare_arms(metric, "treatment", *arms, small_sample="cr3")


def scores(by_rep: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Bias, coverage and MDE of the creator split and the two-sided design per metric,
    against the global truth (the metric over all creators, all treatment minus all
    control), from their CR3 intervals."""
    from recscope.sim.designs import Z_MDE

    rows = []
    designs = ["split", "two_sided"]
    if all(ATTRIBUTED in r for r in by_rep.values()):
        designs.insert(1, ATTRIBUTED)
    for design in designs:
        for metric, (y, d) in _METRICS.items():
            est, tru, lo, hi, se = [], [], [], [], []
            for r in by_rep.values():
                t = {k: np.asarray(r[k], dtype=float) for k in (*RUNS, design)}
                a = np.asarray(r["arm"]) == 1

                def value(x: np.ndarray, y: int = y, d: int | None = d) -> float:
                    num = x[y].sum(axis=0)
                    return float(num.sum() / x[d].sum()) if d is not None else float(
                        num.mean())

                e = _cr3(t[design], a, metric)
                est.append(e.estimate)
                tru.append(value(t["treatment"]) - value(t["control"]))
                lo.append(e.ci_low)
                hi.append(e.ci_high)
                se.append(e.se)
            err = np.asarray(est) - np.asarray(tru)
            k = err.size
            bias_se = float(err.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
            truth = float(np.mean(tru))
            rows.append({
                "design": design, "metric": metric, "reps": k, "truth": truth,
                "estimate": float(np.mean(est)), "bias": float(err.mean()),
                "bias_se": bias_se, "bias_over_se": float(err.mean()) / bias_se,
                "rel_bias": float(err.mean()) / truth if truth else float("nan"),
                "coverage": float(np.mean((np.asarray(lo) <= tru) & (np.asarray(tru) <= hi))),
                "mde": float(Z_MDE * np.mean(se)), "sd": float(np.std(est, ddof=1))})
    return rows


def report(redraws: int = 200) -> dict[str, Any]:
    """The decomposition of every stored setting (see the module docstring)."""
    recs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(RECORDS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a time-out
                continue
            recs.setdefault(r["setting"], {})[r["rep"]] = r
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for tag, by_rep in sorted(recs.items()):
        acc: dict[str, list[float]] = {}

        def put(key: str, v: float, acc: dict[str, list[float]] = acc) -> None:
            acc.setdefault(key, []).append(v)

        for r in by_rep.values():
            t = {k: np.asarray(r[k], dtype=float) for k in RUNS}
            a = np.asarray(r["arm"]) == 1
            every = np.ones(a.size, dtype=bool)
            truth = _ctr(t["treatment"], every) - _ctr(t["control"], every)
            oracle = _ctr(t["treatment"], a) - _ctr(t["control"], ~a)
            split = _ctr(t["split"], a) - _ctr(t["split"], ~a)
            two = _ctr(t["two_sided"], a) - _ctr(t["two_sided"], ~a)
            put("truth", truth)
            put("split - truth", split - truth)
            put("split - oracle", split - oracle)
            put("two_sided - truth", two - truth)
            if ATTRIBUTED in r:
                t[ATTRIBUTED] = np.asarray(r[ATTRIBUTED], dtype=float)
                put(f"{ATTRIBUTED} - truth", _ctr(t[ATTRIBUTED], a)
                    - _ctr(t[ATTRIBUTED], ~a) - truth)
                put(f"{ATTRIBUTED} - oracle", _ctr(t[ATTRIBUTED], a)
                    - _ctr(t[ATTRIBUTED], ~a) - oracle)
                for m, own in ((~a, "control"), (a, "treatment")):
                    put(f"{ATTRIBUTED} - own replay, {own} creators, related",
                        _ctr(t[ATTRIBUTED], m, 1) - _ctr(t[own], m, 1))
            draws = []
            for _ in range(redraws):
                b = rng.random(a.size) < 0.5
                draws.append(_ctr(t["treatment"], b) - _ctr(t["control"], ~b))
            put("ratio bias (oracle over re-drawn splits - truth)", float(np.mean(draws))
                - truth)
            share = [t[r][0].sum(axis=1) / t[r][0].sum() for r in ("control", "treatment")]
            for s, name in enumerate(SURFACES):
                ctr_s = [_ctr(t[r], every, s) for r in ("control", "treatment")]
                put(f"truth on {name}", ctr_s[1] - ctr_s[0])
                # the truth = sum over surfaces of these two parts: the surface's own CTR
                # change at the mean share, and its share's change at the mean CTR
                if share[0][s] > 0 and share[1][s] > 0:
                    put(f"truth, within {name}", (share[0][s] + share[1][s]) / 2
                        * (ctr_s[1] - ctr_s[0]))
                    put(f"truth, share of {name}", (share[1][s] - share[0][s])
                        * (ctr_s[0] + ctr_s[1]) / 2)
                put(f"impression share of {name}: control",
                    float(t["control"][0, s].sum() / t["control"][0].sum()))
                put(f"impression share of {name}: treatment",
                    float(t["treatment"][0, s].sum() / t["treatment"][0].sum()))
                for m, own in ((~a, "control"), (a, "treatment")):
                    put(f"split - own replay, {own} creators, {name}",
                        _ctr(t["split"], m, s) - _ctr(t[own], m, s))
            for m, own in ((~a, "control"), (a, "treatment")):
                put(f"two_sided - own replay, {own} creators (catalogue halved)",
                    _ctr(t["two_sided"], m) - _ctr(t[own], m))
            for j, metric in ((0, "exposure"), (1, "clicks_received"), (2, "saves_received")):
                tr = _mean(t["treatment"], j, every) - _mean(t["control"], j, every)
                put(f"{metric}: split - truth", _mean(t["split"], j, a)
                    - _mean(t["split"], j, ~a) - tr)
                put(f"{metric}: two_sided - truth", _mean(t["two_sided"], j, a)
                    - _mean(t["two_sided"], j, ~a) - tr)
        out[tag] = {"reps": len(by_rep), "rows": {k: _summary(v) for k, v in acc.items()},
                    "designs": scores(by_rep)}
    return out


def markdown(summary: dict[str, Any]) -> str:
    """One table per setting: mean ± s.e. (t) of every term."""
    lines = []
    for tag, s in summary.items():
        lines += [f"\n**{tag}** ({s['reps']} repetitions)\n", "| term | mean ± s.e. | t |",
                  "|---|---|---|"]
        for k, v in s["rows"].items():
            lines.append(f"| {k} | {v['mean']:+.3g} ± {v['se']:.2g} | {v['t']:+.1f} |")
        lines += ["", "| design | metric | truth | bias ± s.e. | bias/s.e. | relative bias "
                  "| coverage | MDE |", "|---|---|---|---|---|---|---|---|"]
        for r in s["designs"]:
            lines.append(f"| {r['design']} | {r['metric']} | {r['truth']:.4g} | "
                         f"{r['bias']:+.3g} ± {r['bias_se']:.2g} | {r['bias_over_se']:+.1f} | "
                         f"{r['rel_bias']:+.0%} | {r['coverage']:.1%} | {r['mde']:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["collect", "report"])
    ap.add_argument("--setting", choices=sorted(interference.SETTINGS), default="off-nocarry")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--no-related", action="store_true",
                    help="switch the related-pins surface off")
    ap.add_argument("--scale", type=float, default=interference.SCALE,
                    help="world scale (0.1: 2,000 users, 1,000 pins)")
    ap.add_argument("--depth", type=int, default=2,
                    help="candidates per ranking in the creator split, x slate size")
    ap.add_argument("--redraws", type=int, default=200,
                    help="report: re-drawn creator splits for the ratio-of-sums bias")
    args = ap.parse_args(argv)
    if args.depth < 2 or args.depth % 2:
        ap.error(f"--depth must be an even number >= 2, got {args.depth}")
    if args.what == "collect":
        collect(args.setting, args.start, args.reps, no_related=args.no_related,
                scale=args.scale, depth=args.depth)
        return
    summary = report(args.redraws)
    (OUT / "creator-bias.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown(summary))


if __name__ == "__main__":
    main()
