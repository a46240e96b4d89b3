"""The whole measurement story on the built-in world, end to end (``recscope demo``).

1. **World**: generate the built-in visual-discovery platform and its logged history.
2. **Train** a baseline stack (popularity retriever ► ALS ranker) and a candidate stack
   that changes both components (ALS retriever ► BPR ranker), recscope components fitted
   on the clicks and saves of the log's first 80% (by time).
3. **Offline benchmark** on the last 20%: NDCG/recall with bootstrap intervals, paired
   tests, and the stage funnel (how many held-out engagements survive retrieval, then
   the final top-k).
4. **Online experiment** in the simulated platform: a 2×2 factorial (retriever layer ×
   ranker layer, assigned by :func:`recscope.experiments.assignment.assign`) over 14
   days after a warm-up, logs written as Parquet.
5. **Scorecard** with :func:`recscope.experiments.analysis.analyze`, and the **ground
   truth** of every cell from common-random-number replays beside every estimate.
6. **Attribution** of the full-stack effect to each component and their interaction
   (:func:`recscope.attribution.attribute_metric`) beside the true Shapley shares.

7. **Launch decision** on the full stack (:func:`recscope.launch.decide_simulated`) with
   the truth's verdict beside it.
8. **What history predicted**: the offline->online predictor, fitted on a small history
   of other candidate stacks simulated on the same world (:mod:`recscope.history.demo`,
   kept under ``history/`` and reused while its key matches), forecasts the candidate's
   effect on clicks with a conformal interval, beside what the experiment measured.

Everything goes into ``report.html`` (Plotly inlined), ``summary.json``, ``launch.json`` /
``launch.html`` and the experiment's files under ``experiment/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from recscope.core.progress import Progress, report
from recscope.errors import ConfigError

SCALES: dict[str, dict[str, Any]] = {
    "default": {"world_scale": 1.0, "days": 14, "warmup_days": 7, "long_run_days": 21,
                "pool": 100, "factors": 32, "bpr_iterations": 60, "eval_users": 20_000, "bootstrap": 1000},
    "small": {"world_scale": 0.04, "days": 14, "warmup_days": 2, "long_run_days": 0,
              "pool": 50, "factors": 16, "bpr_iterations": 20, "eval_users": 1_000, "bootstrap": 200},
}
KEY_METRICS = ("ctr", "clicks", "saves", "sessions", "active_days")
COMPONENTS = ("retriever", "ranker")
BASELINE = {"retriever": "popularity", "ranker": "als"}
CANDIDATE = {"retriever": "als", "ranker": "bpr"}


def run_story(out_dir: str | Path, scale: str = "default", progress: Progress | None = None,
              *, seed: int = 0, force: bool = True,
              tracking: str | None = None) -> dict[str, Any]:
    """Run the story; write ``report.html``, ``summary.json`` and the experiment's logs
    (``experiment/``) under ``out_dir``, all at once at the end
    (:func:`recscope.io.atomic_dir`: a non-empty ``out_dir`` needs ``force``, and only
    files recscope wrote there are replaced).

    ``progress(stage, done, total)`` is called as work advances. Returns the summary:
    per metric the full-stack estimate, its interval and the ground truth, plus the
    offline benchmark, the attribution and timings. ``tracking``: the tracking store
    (default: the project store).
    """
    from recscope.io import check_out_dir

    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {sorted(SCALES)}", key="scale")
    if seed < 0:
        raise ConfigError(f"must be 0 or more (got {seed})", key="seed")
    check_out_dir(out_dir, force=force)
    sz = SCALES[scale]
    out = Path(out_dir)
    timings: dict[str, float] = {}
    report_parts: dict[str, Any] = {}

    from recscope.tracking import track

    with track("demo.story", config={"scale": scale, "seed": seed, **sz},
               store=tracking) as run:
        t = time.perf_counter()
        world = _world(sz, seed, progress)
        timings["world_s"] = time.perf_counter() - t

        t = time.perf_counter()
        train, test = _split(world)
        comps = _train(train, sz, seed, progress)
        timings["train_s"] = time.perf_counter() - t

        t = time.perf_counter()
        offline = _offline(train, test, comps, sz, progress)
        timings["offline_s"] = time.perf_counter() - t

        t = time.perf_counter()
        online = _online(world, comps, sz, seed, progress)
        timings["simulation_s"] = time.perf_counter() - t

        t = time.perf_counter()
        history = _history(world, comps, sz, scale, seed, out, progress)
        timings["history_s"] = time.perf_counter() - t

        t = time.perf_counter()
        summary = _summarise(world, offline, online, sz, scale, seed)
        summary["history"] = _history_summary(history, online)
        decision = _launch(online)
        summary["launch"] = {"decision": decision.decision, "truth": decision.truth_verdict,
                             "reasons": [c.extra["text"] for c in decision.reasons()]}
        summary["timings"] = {k: round(v, 2) for k, v in timings.items()}
        report_parts.update(offline=offline, online=online)
        html = _report(summary, report_parts)
        from recscope.io import atomic_dir, write_json, write_text

        summary["timings"]["report_s"] = round(time.perf_counter() - t, 2)
        with atomic_dir(out, force=force) as tmp:
            online["result"].save_to(tmp / "experiment")
            _write_history(tmp, history)
            write_text(tmp / "report.html", html)
            write_text(tmp / "launch.json", decision.to_json() + "\n")
            write_text(tmp / "launch.html", decision.to_html())
            write_json(tmp / "summary.json", summary)
        run.log_metrics({f"{m}.estimate": v["estimate"] for m, v in summary["metrics"].items()})
        run.log_metrics({f"{m}.truth": v["truth"] for m, v in summary["metrics"].items()})
        run.log_artifact(out / "summary.json")
        run.log_artifact(out / "report.html")
    return summary


# ---------------------------------------------------------------------- steps
def _world(sz: dict[str, Any], seed: int, progress: Progress | None) -> Any:
    from recscope.sim import World, WorldConfig

    cfg = WorldConfig(seed=seed)
    if sz["world_scale"] != 1.0:
        cfg = cfg.scaled(sz["world_scale"])
    return World.generate(cfg, progress=progress)


def _split(world: Any) -> tuple[Any, Any]:
    from recscope.data.splits import temporal_split_fraction

    pos = world.interactions.filter(events=["click", "save"])
    sp = temporal_split_fraction(pos, 0.2)
    return sp.train, sp.test


def _train(train: Any, sz: dict[str, Any], seed: int,
           progress: Progress | None) -> dict[str, Any]:
    from recscope.models.base import get_component

    specs = {"popularity": ("popularity", {}),
             "als": ("als", {"factors": sz["factors"], "iterations": 15, "seed": seed}),
             "bpr": ("bpr", {"factors": sz["factors"], "iterations": sz["bpr_iterations"],
                             "seed": seed})}
    out = {}
    for i, (name, (comp, params)) in enumerate(specs.items()):
        out[name] = get_component(comp)(params).fit(train)
        report(progress, "train", i + 1, len(specs))
    return out


def _stack_lists(comps: dict[str, Any], stack: dict[str, str], users: np.ndarray, pool: int,
                 k: int) -> Any:
    """Offline RankedLists of a stack, with the retrieval trace for the funnel (the
    retrieve-then-rank step the simulator's stacks and pipelines use)."""
    from recscope.pipeline.stack import RetrieveRank

    return RetrieveRank(comps[stack["retriever"]], comps[stack["ranker"]], pool).recommend(
        users, k)


def _offline(train: Any, test: Any, comps: dict[str, Any], sz: dict[str, Any],
             progress: Progress | None) -> dict[str, Any]:
    from recscope.data.rankings import Relevance
    from recscope.offline import evaluate
    from recscope.offline.compare import compare

    held = test.to_csr("binary")
    # held-out engagements with items the user already engaged with in training are
    # not new discoveries: drop them from the truth (the lists exclude them too)
    rel = Relevance.from_csr((held - held.multiply(train.to_csr("binary"))).tocsr())
    users = np.flatnonzero(rel.counts() > 0).astype(np.int32)[:sz["eval_users"]]
    stacks = {"baseline": BASELINE, "candidate": CANDIDATE,
              "retriever only": {**BASELINE, "retriever": CANDIDATE["retriever"]},
              "ranker only": {**BASELINE, "ranker": CANDIDATE["ranker"]}}
    metrics = ["ndcg@10", "recall@10", "recall@20"]
    results, funnel = {}, []
    for i, (name, stack) in enumerate(stacks.items()):
        lists = _stack_lists(comps, stack, users, sz["pool"], 20)
        results[name] = evaluate(lists, rel, metrics, bootstrap=sz["bootstrap"], seed=0)
        pool_lists = _trace_lists(lists, "retrieval")
        f = evaluate(pool_lists, rel, [f"recall@{sz['pool']}"], bootstrap=0)
        funnel.append({"stack": name,
                       "retrieval": f.mean(f"recall@{sz['pool']}"),
                       "top-20": results[name].mean("recall@20"),
                       "top-10": results[name].mean("recall@10")})
        report(progress, "offline", i + 1, len(stacks))
    cmp = compare({"baseline": results["baseline"], "candidate": results["candidate"]})
    rows = []
    for name, res in results.items():
        for m in metrics:
            lo, hi = res.ci(m)
            rows.append({"stack": name, "metric": m, "mean": res.mean(m), "ci_low": lo,
                         "ci_high": hi})
    return {"rows": rows, "funnel": funnel, "comparison": cmp.to_dict(),
            "n_users": int(users.size), "pool": sz["pool"]}


def _stack_name(stack: dict[str, str]) -> str:
    return f"{stack['retriever']} retriever ► {stack['ranker']} ranker"


def _trace_lists(lists: Any, stage: str) -> Any:
    from recscope.data.rankings import RankedLists

    items = lists.traces[stage]
    return RankedLists(lists.users, items, np.zeros(items.shape, dtype=np.float32))


def _online(world: Any, comps: dict[str, Any], sz: dict[str, Any], seed: int,
            progress: Progress | None) -> dict[str, Any]:
    from recscope.attribution import CellStats, attribute_metric
    from recscope.experiments.analysis import analyze
    from recscope.sim import ExperimentSpec, run_experiment, unit_totals
    from recscope.sim.stacks import ComponentRanker, ComponentRetriever

    n_users = world.truth.n_users
    parts = {("retriever", "popularity"): ComponentRetriever(comps["popularity"], n_users),
             ("retriever", "als"): ComponentRetriever(comps["als"], n_users),
             ("ranker", "als"): ComponentRanker(comps["als"]),
             ("ranker", "bpr"): ComponentRanker(comps["bpr"])}
    spec = ExperimentSpec.model_validate({
        "name": "new-stack", "seed": seed, "days": sz["days"],
        "warmup_days": sz["warmup_days"], "long_run_days": sz["long_run_days"],
        "policy": {**BASELINE, "pool": sz["pool"]},
        "experiment": [
            {"name": "retriever", "layer": "retrieval",
             "variants": {"control": {}, "treatment": {"retriever": CANDIDATE["retriever"]}}},
            {"name": "ranker", "layer": "ranking",
             "variants": {"control": {}, "treatment": {"ranker": CANDIDATE["ranker"]}}},
        ]})

    def prog(stage: str, i: float, n: float) -> None:
        report(progress, f"simulate: {stage}", i, n)

    res = run_experiment(spec, truth_world=world.truth, progress=prog, parts=parts)
    card = analyze(res.assignments, res.events, res.metrics)
    design = res.cells
    a = res.assignments
    cells = np.array([design.cell_names.index(v) for v in a.column("variant").to_pylist()])
    tot = unit_totals(a, res.events, ["clicks", "impressions", "saves", "sessions"])
    attribution = {}
    for m in ("ctr", "clicks", "saves", "sessions"):
        cs = (CellStats.from_units(cells, tot["clicks"], 2, denominator=tot["impressions"])
              if m == "ctr" else CellStats.from_units(cells, tot[m], 2))
        attribution[m] = attribute_metric(cs, list(COMPONENTS), metric=m, seed=seed).to_dict()
    from recscope.experiments.novelty import daily_effects, project_settled

    novelty = project_settled(daily_effects(res.assignments, res.events, days=sz["days"]),
                              variant=design.cell_names[-1], seed=seed)
    return {"scorecard": card, "truth": res.truth, "attribution": attribution,
            "summary": res.to_dict(), "daily": res.daily, "design": design, "result": res,
            "novelty": novelty}


def _history(world: Any, comps: dict[str, Any], sz: dict[str, Any], scale: str, seed: int,
             out: Path, progress: Progress | None) -> dict[str, Any]:
    """The history predictor's forecast for the candidate (a corpus on this world, reused
    from ``out/history/`` when its key matches)."""
    from recscope.history.demo import FOLDER, demo_prediction

    def prog(stage: str, i: int, n: int) -> None:
        report(progress, f"history: {stage}", i, n)

    cells = {"retriever": {**BASELINE, "retriever": CANDIDATE["retriever"]},
             "ranker": {**BASELINE, "ranker": CANDIDATE["ranker"]},
             "retriever+ranker": CANDIDATE}
    return demo_prediction(world, comps, baseline=BASELINE, candidates=cells,
                           pool=sz["pool"], scale=scale, seed=seed, days=sz["days"],
                           warmup_days=sz["warmup_days"], cached=out / FOLDER,
                           progress=prog)


def _history_summary(pred: dict[str, Any], online: dict[str, Any]) -> dict[str, Any]:
    """Each cell's forecast beside what the experiment measured and the truth
    (relative effects)."""
    out = {k: v for k, v in pred.items() if k not in ("table", "meta", "predictions")}
    gt = online["truth"]
    cells = {}
    for r in online["scorecard"].results:
        p = pred["predictions"].get(r["variant"])
        if r["metric"] != pred["metric"] or p is None:
            continue
        t = gt.true_effects(r["metric"]).get(r["variant"], {}).get("rel_effect")
        cells[r["variant"]] = {**p, "measured": r["rel_effect"],
                               "measured_ci_low": r["rel_ci_low"],
                               "measured_ci_high": r["rel_ci_high"], "truth": t,
                               "covered": None if t is None else
                               bool(p["ci_low"] <= t <= p["ci_high"])}
    out["cells"] = cells
    return out


def _write_history(tmp: Path, pred: dict[str, Any]) -> None:
    """The demo's history corpus under ``history/`` (reused by the next run)."""
    from recscope.history.demo import FOLDER
    from recscope.io import write_json, write_parquet

    (tmp / FOLDER).mkdir()
    write_parquet(tmp / FOLDER / "history.parquet", pred["table"])
    write_json(tmp / FOLDER / "corpus.json", pred["meta"])


def _launch(online: dict[str, Any]) -> Any:
    """The launch decision on the full-stack cell, with its truth (``recscope.launch``)."""
    from recscope.launch import SIM_LAUNCH, decide_simulated

    res = online["result"]
    return decide_simulated(SIM_LAUNCH, res, variant=res.cell_names[-1],
                            attribution={"metrics": online["attribution"]})


# ---------------------------------------------------------------------- summary
def _summarise(world: Any, offline: dict[str, Any], online: dict[str, Any],
               sz: dict[str, Any], scale: str, seed: int) -> dict[str, Any]:
    gt = online["truth"]
    full = "retriever+ranker"
    metrics: dict[str, Any] = {}
    for r in online["scorecard"].results:
        if r["variant"] != full:
            continue
        m = r["metric"]
        eff = gt.true_effects(m).get(full, {})
        entry = {"estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                 "rel_estimate": r["rel_effect"], "rel_ci_low": r["rel_ci_low"],
                 "rel_ci_high": r["rel_ci_high"], "p_value": r["p_value"],
                 "truth": eff.get("effect"), "rel_truth": eff.get("rel_effect"),
                 "covered": bool(r["ci_low"] <= eff.get("effect", np.nan) <= r["ci_high"])}
        if gt.long_run:
            lr = gt.true_effects(m, long_run=True).get(full, {})
            entry["truth_long_run"] = lr.get("effect")
        if m in online["attribution"]:
            att = online["attribution"][m]
            true_att = gt.shapley(m)
            entry["attribution"] = {
                c: {"share": att["components"][c]["share"],
                    "ci_low": att["components"][c]["ci_low"],
                    "ci_high": att["components"][c]["ci_high"],
                    "true_share": true_att["components"][c]["share"]} for c in COMPONENTS}
            inter = att["interactions"].get("retriever×ranker", {})
            entry["interaction"] = {"estimate": inter.get("effect"),
                                    "ci_low": inter.get("ci_low"),
                                    "ci_high": inter.get("ci_high"),
                                    "truth": true_att.get("interaction")}
        metrics[m] = entry
    nov = online["novelty"].settled
    long_run = {"metric": "ctr", "settled_projection": nov.estimate, "ci_low": nov.ci_low,
                "ci_high": nov.ci_high, "trend_p_value": online["novelty"].trend_p_value,
                "first_days_effect": online["novelty"].first_days,
                "truth_short_run": gt.true_effects("ctr").get(full, {}).get("effect"),
                "truth_long_run": (gt.true_effects("ctr", long_run=True).get(full, {})
                                   .get("effect") if gt.long_run else None)}
    s = online["summary"]
    return {
        "scale": scale, "seed": seed,
        "world": {"users": world.truth.n_users, "items": world.truth.n_items,
                  "log_rows": len(world.interactions), "description": world.describe()},
        "stacks": {"baseline": BASELINE, "candidate": CANDIDATE},
        "experiment": {"days": sz["days"], "warmup_days": sz["warmup_days"],
                       "units": s["n_units"], "units_per_cell": s["units_per_variant"],
                       "impressions": s["impressions"],
                       "srm_p_value": online["scorecard"].srm["p_value"]},
        "offline": {"rows": offline["rows"], "funnel": offline["funnel"],
                    "n_users": offline["n_users"]},
        "metrics": metrics,
        "long_run": long_run,
    }


# ---------------------------------------------------------------------- report
def _history_line(h: dict[str, Any], cell: str = "retriever+ranker") -> str:
    """'What history predicted' for ``cell`` beside what the experiment measured and the
    truth."""
    c = h["cells"][cell]
    seen = "" if c["family_seen"] else f"; none of the family {c['family']}"
    text = (f"What history predicted for {h['metric']} (full stack vs baseline): "
            f"{c['estimate']:+.1%} ({h['level']:.0%} conformal interval {c['ci_low']:+.1%} "
            f"to {c['ci_high']:+.1%}; triage: {c['recommendation']}), from "
            f"{h['candidates']} other candidate stacks in {h['families']} families "
            f"simulated on this world (truth over the experiment's {h['corpus_days']} "
            f"days){seen}"
            f" (history/: {h.get('source', 'built')}, {h['seconds']:.0f} s)."
            f" The experiment then measured {c['measured']:+.1%} (95% CI "
            f"{c['measured_ci_low']:+.1%} to {c['measured_ci_high']:+.1%})")
    if c.get("truth") is not None:
        text += (f"; the ground truth is {c['truth']:+.1%}, "
                 f"{'inside' if c['covered'] else 'outside'} the predicted interval")
    return text + "."


def _history_section(rep: Any, h: dict[str, Any]) -> None:
    """Every cell's forecast, measured effect and truth (section 2's last table)."""
    rep.heading("What history predicted, cell by cell")
    rep.paragraph(_history_line(h) + " Forecasts come from the offline→online predictor "
                  "(ridge on the offline NDCG/recall deltas, the OPE estimate and a one-day "
                  "replay) fitted on the history; their interval is split-conformal over "
                  "families (docs/history.md).", "note")
    rep.table([{"cell": cell, "family": c["family"], "predicted": f"{c['estimate']:+.1%}",
                f"{h['level']:.0%} interval": f"{c['ci_low']:+.1%} to {c['ci_high']:+.1%}",
                "triage": c["recommendation"], "measured": f"{c['measured']:+.1%}",
                "95% CI": f"{c['measured_ci_low']:+.1%} to {c['measured_ci_high']:+.1%}",
                "truth": "–" if c["truth"] is None else f"{c['truth']:+.1%}",
                "truth inside the interval": "–" if c["covered"] is None else
                ("yes" if c["covered"] else "no")} for cell, c in h["cells"].items()])


def _long_run_section(rep: Any, lr: dict[str, Any], novelty: Any) -> None:
    """Novelty: the full stack's CTR effect by day since exposure, the settled effect
    projected from the two weeks, and the long-run truth beside it."""
    rep.heading("Long run: novelty projection of the settled CTR effect (full stack)")
    truth = lr["truth_long_run"]
    covered = (None if truth is None else
               "yes" if lr["ci_low"] <= truth <= lr["ci_high"] else "no")
    rep.table([{"first days' effect": lr["first_days_effect"],
                "two-week truth": lr["truth_short_run"],
                "projected settled effect": lr["settled_projection"],
                "ci_low": lr["ci_low"], "ci_high": lr["ci_high"],
                "long-run truth (last replay week)": truth, "covered": covered,
                "trend p": lr["trend_p_value"]}])
    for note in novelty.notes():
        rep.paragraph(note, "note")
    if truth is None:
        rep.paragraph("No long-run replay at this scale: the truth is not computed.", "note")
    novelty.html_sections(rep)


def _world_section(rep: Any, d: dict[str, Any]) -> None:
    """The built-in world and its logged history: counts, engagement by surface and
    position, heavy tails."""
    import plotly.graph_objects as go

    rep.heading("0. The built-in world and its logged history")
    rep.paragraph(f"{d['active_users']:,} active users in {d['n_sessions']:,} sessions and "
                  f"{d['n_requests']:,} slates; the top 1% of users receive "
                  f"{d['top1pct_user_share']:.1%} of impressions and the top 1% of pins "
                  f"{d['top1pct_item_share']:.1%}. The log comes from a known stochastic "
                  "policy with exact propensities; the world keeps the true preferences.")
    rep.table([{"surface": name, "requests": v["requests"], "impressions": v["impressions"],
                "CTR": v["ctr"], "save rate": v["save_rate"], "hide rate": v["hide_rate"]}
               for name, v in d["surfaces"].items()])
    fig = go.Figure()
    for name, v in d["surfaces"].items():
        fig.add_trace(go.Scatter(x=list(range(len(v["ctr_by_position"]))),
                                 y=v["ctr_by_position"], mode="lines+markers", name=name))
    fig.update_layout(title="Logged click-through rate by position", height=340,
                      xaxis_title="position (0-based)", yaxis_title="CTR",
                      margin={"t": 40, "b": 30})
    rep.figure(fig)


def _report(summary: dict[str, Any], parts: dict[str, Any]) -> str:
    """The story's self-contained HTML page."""
    import plotly.graph_objects as go

    from recscope.report import HtmlReport, fmt_cell

    online, offline = parts["online"], parts["offline"]
    gt = online["truth"]
    w = summary["world"]
    rep = HtmlReport("recscope: the measurement story",
                     f"Built-in world: {w['users']:,} users, {w['items']:,} pins, "
                     f"{w['log_rows']:,} logged rows. Baseline stack: "
                     f"{_stack_name(BASELINE)}; candidate: {_stack_name(CANDIDATE)}.")
    ctr = summary["metrics"].get("ctr")
    if ctr is not None:
        rel = ctr.get("rel_truth")
        rep.banner(f"Full stack vs baseline, CTR: estimated {ctr['rel_estimate']:+.1%} "
                   f"(95% CI {ctr['rel_ci_low']:+.1%} to {ctr['rel_ci_high']:+.1%}); "
                   f"ground truth {rel:+.1%}." if rel is not None else "",
                   "ok" if ctr["covered"] else "warn")
    launch = summary.get("launch")
    if launch is not None:
        rep.paragraph(f"Launch decision on the full stack: {launch['decision']} (the ground "
                      f"truth says {launch['truth']}); the reasons and the metric tree are "
                      "in launch.html beside this report.", "note")
    hist = summary.get("history")
    if hist is not None and "retriever+ranker" in hist["cells"]:
        rep.paragraph(_history_line(hist), "note")
    _world_section(rep, w["description"])
    rep.heading("1. Offline benchmark (held-out last 20% of the log)")
    rep.paragraph(f"{offline['n_users']:,} test users; intervals are bootstrap 95% over users.")
    rep.table(offline["rows"], ["stack", "metric", "mean", "ci_low", "ci_high"])
    fig = go.Figure()
    for name in ("baseline", "retriever only", "ranker only", "candidate"):
        rows = [r for r in offline["rows"] if r["stack"] == name]
        fig.add_bar(name=name, x=[r["metric"] for r in rows], y=[r["mean"] for r in rows],
                    error_y={"type": "data", "symmetric": False,
                             "array": [r["ci_high"] - r["mean"] for r in rows],
                             "arrayminus": [r["mean"] - r["ci_low"] for r in rows]})
    fig.update_layout(barmode="group", height=360, title="Offline metrics with 95% intervals")
    rep.figure(fig)
    rep.heading("Stage funnel: share of held-out engagements still present after each stage")
    rep.table(offline["funnel"])
    fig = go.Figure()
    for f in offline["funnel"]:
        stages = ["retrieval", "top-20", "top-10"]
        fig.add_scatter(name=f["stack"], x=stages, y=[f[s] for s in stages],
                        mode="lines+markers")
    fig.update_layout(height=340, yaxis_title="recall", title="Stage funnel")
    rep.figure(fig)

    ex = summary["experiment"]
    rep.heading("2. Online 2×2 factorial experiment in the simulated platform")
    rep.paragraph(f"{ex['units']:,} units over {ex['days']} days after a "
                  f"{ex['warmup_days']}-day warm-up; {ex['impressions']:,} impressions. "
                  "Units per cell: " + ", ".join(f"{k} {v:,}" for k, v in
                                                 ex["units_per_cell"].items()) +
                  ". Sample-ratio test p = "
                  f"{ex['srm_p_value']:.3f}.")
    if ex["srm_p_value"] < 0.001:
        rep.banner("Sample-ratio mismatch: the allocation differs from the design.", "bad")
    rows = []
    for r in online["scorecard"].results:
        true = gt.true_effects(r["metric"]).get(r["variant"], {}).get("effect")
        rows.append({"metric": r["metric"], "cell": r["variant"], "estimate": r["estimate"],
                     "ci_low": r["ci_low"], "ci_high": r["ci_high"], "true effect": true,
                     "covered": "yes" if true is not None and r["ci_low"] <= true <=
                     r["ci_high"] else "no", "p (adj.)": r["p_value_adjusted"]})
    rep.table(rows)
    fig = go.Figure()
    for cell in online["design"].cell_names[1:]:
        sel = [r for r in online["scorecard"].results
               if r["variant"] == cell and r["metric"] in KEY_METRICS]
        ms = [r["metric"] for r in sel]
        est = [100 * r["rel_effect"] for r in sel]
        fig.add_scatter(name=f"{cell}: estimate", x=ms, y=est, mode="markers",
                        error_y={"type": "data", "symmetric": False,
                                 "array": [100 * r["rel_ci_high"] - e
                                           for r, e in zip(sel, est, strict=True)],
                                 "arrayminus": [e - 100 * r["rel_ci_low"]
                                                for r, e in zip(sel, est, strict=True)]})
        fig.add_scatter(name=f"{cell}: truth", x=ms, mode="markers",
                        y=[100 * gt.true_effects(m).get(cell, {}).get("rel_effect", np.nan)
                           for m in ms], marker={"symbol": "x", "size": 11})
    fig.update_layout(height=420, yaxis_title="effect vs control (%)",
                      title="Estimated relative effects (95% CI) and ground truth, "
                      "each cell vs control")
    rep.figure(fig)
    if gt.long_run:
        rep.heading("Short-run vs long-run truth (full stack vs control)")
        lr_rows = []
        for m in gt.metrics:
            sr = gt.true_effects(m).get("retriever+ranker", {})
            lr = gt.true_effects(m, long_run=True).get("retriever+ranker", {})
            lr_rows.append({"metric": m, "short-run effect": sr.get("effect"),
                            "short-run relative": sr.get("rel_effect"),
                            "long-run effect (last week)": lr.get("effect"),
                            "long-run relative": lr.get("rel_effect")})
        rep.table(lr_rows)
    _long_run_section(rep, summary["long_run"], online["novelty"])
    daily = online["daily"]
    fig = go.Figure()
    fig.add_scatter(x=[d["day"] for d in daily],
                    y=[d["clicks"] / max(d["impressions"], 1) for d in daily],
                    name="CTR (all cells)")
    fig.add_scatter(x=[d["day"] for d in daily], y=[d["sessions"] for d in daily],
                    name="sessions", yaxis="y2")
    fig.update_layout(height=320, title="Daily platform activity during the experiment",
                      yaxis={"title": "CTR"},
                      yaxis2={"title": "sessions", "overlaying": "y", "side": "right"})
    rep.figure(fig)

    if summary.get("history", {}).get("cells"):
        _history_section(rep, summary["history"])

    rep.heading("3. Attribution of the full-stack effect (Shapley values and shares)")
    rep.paragraph("Each component's Shapley value is its average marginal contribution over "
                  "both orders of switching the components on; the values add up to the "
                  "full-stack effect. Shares are value / total, with parametric-bootstrap "
                  "intervals; they are only meaningful where the total effect is clearly "
                  "non-zero.", "note")
    att_rows = []
    for m, att in online["attribution"].items():
        true_att = gt.shapley(m)
        tot = att["total"]
        clear = tot["ci_low"] > 0 or tot["ci_high"] < 0
        for c in COMPONENTS:
            v = att["components"][c]
            att_rows.append({
                "metric": m, "component": c, "value": v["effect"],
                "value ci": f"[{v['effect_ci_low']:.4g}, {v['effect_ci_high']:.4g}]",
                "true value": true_att["components"][c]["effect"],
                "share": v["share"] if clear else None,
                "share ci": (f"[{fmt_cell('share', v['ci_low'])}, "
                             f"{fmt_cell('share', v['ci_high'])}]") if clear else
                "total not significant",
                "true_share": true_att["components"][c]["share"]})
        it = att["interactions"].get("retriever×ranker", {})
        att_rows.append({"metric": m, "component": "interaction", "value": it.get("effect"),
                         "value ci": f"[{it.get('ci_low', np.nan):.4g}, "
                                     f"{it.get('ci_high', np.nan):.4g}]",
                         "true value": true_att.get("interaction")})
    rep.table(att_rows, ["metric", "component", "value", "value ci", "true value", "share",
                         "share ci", "true_share"])
    fig = go.Figure()
    base = {m: att["cells"][0]["value"] for m, att in online["attribution"].items()}
    for c in (*COMPONENTS, "interaction"):
        sel = [r for r in att_rows if r["component"] == c]
        fig.add_bar(name=f"{c} (estimate)", x=[r["metric"] for r in sel],
                    y=[100 * r["value"] / base[r["metric"]] for r in sel])
        fig.add_scatter(name=f"{c} (truth)", x=[r["metric"] for r in sel],
                        y=[100 * r["true value"] / base[r["metric"]] for r in sel],
                        mode="markers", marker={"symbol": "x", "size": 12})
    fig.update_layout(barmode="group", height=380, yaxis_title="% of the control mean",
                      title="Shapley values and interaction: estimate (bars) and truth (x)")
    rep.figure(fig)
    rep.heading("4. Summary: full stack vs control")
    rep.table([{"metric": m, "estimate": e["estimate"], "ci_low": e["ci_low"],
                "ci_high": e["ci_high"], "truth": e["truth"],
                "long-run truth": e.get("truth_long_run")}
               for m, e in summary["metrics"].items()])
    rep.paragraph("Timings (s): " + ", ".join(f"{k} {v}" for k, v in
                                               summary["timings"].items()), "note")
    return rep.render()
