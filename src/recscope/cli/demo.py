"""``recscope demo``: the README's main job, as a sequence of clear, timed steps.

Today: generate the built-in world, save it, split its log in time, and write
``summary.json`` and a self-contained ``report.html``. Later issues add steps (train
stacks, offline benchmark, simulated experiment, attribution) to :func:`run_demo`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer

from recscope.cli.common import console
from recscope.data.splits import Split, temporal_split
from recscope.sim import SURFACES, World, WorldConfig, load_world_config

if TYPE_CHECKING:
    from recscope.report import HtmlReport


@dataclass
class DemoContext:
    """What the steps share: the output folder, the config and what earlier steps made."""

    out: Path
    config: WorldConfig
    timings: dict[str, float] = field(default_factory=dict)
    world: World | None = None
    split: Split | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        """Print the step's title, time it, and record the time as ``<name>_s``."""
        console.rule(f"[bold]{title}", align="left")
        t0 = time.perf_counter()
        yield
        self.timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)


def step_world(ctx: DemoContext) -> None:
    """Generate the built-in world (progress bar) and save it under ``world/``."""
    from recscope.cli.world import generate_with_progress

    with ctx.step("world_generate", "1. Generate the built-in world"):
        ctx.world = generate_with_progress(ctx.config)
    with ctx.step("world_save", "2. Save the world (Parquet, byte-identical per seed)"):
        ctx.world.save(ctx.out / "world")
    console.print(f"   {ctx.world!r} -> {ctx.out / 'world'}", highlight=False)


def step_split(ctx: DemoContext) -> None:
    """Global temporal split: the last quarter of the days is test, the quarter before
    validation; no test row precedes the cut."""
    assert ctx.world is not None
    cfg = ctx.config
    test_days = max(1, cfg.n_days // 4)
    test_start = cfg.start + timedelta(days=cfg.n_days - test_days)
    val_start = cfg.start + timedelta(days=max(0, cfg.n_days - 2 * test_days))
    with ctx.step("split", "3. Split the log in time (train / validation / test)"):
        ctx.split = temporal_split(ctx.world.interactions, test_start=test_start,
                                   validation_start=val_start)
        for name in ("train", "validation", "test"):
            getattr(ctx.split, name).save(ctx.out / "split" / name)
    ctx.summary["split"] = {
        "method": "temporal", "validation_start": val_start.isoformat(),
        "test_start": test_start.isoformat(), **ctx.split.summary(),
        "test_items_unseen_in_train": _unseen_items(ctx.split),
    }


def step_summary(ctx: DemoContext) -> None:
    """Describe the world and write ``summary.json`` and ``report.html``."""
    from recscope.io import write_json

    assert ctx.world is not None
    with ctx.step("report", "4. Summarise: summary.json and report.html"):
        ctx.summary["world"] = ctx.world.describe()
        ctx.summary["config"] = ctx.config.model_dump(mode="json")
        ctx.summary["timings"] = ctx.timings
        _report(ctx).save(ctx.out / "report.html")
        write_json(ctx.out / "summary.json", ctx.summary)


def run_demo(out: Path, config: WorldConfig) -> DemoContext:
    """Run every step inside one tracking run; return the shared context."""
    from recscope.tracking import track

    ctx = DemoContext(out=out, config=config)
    t0 = time.perf_counter()
    with track("demo", config=config, out_dir=out) as run:
        step_world(ctx)
        assert ctx.world is not None
        with track("split", inputs={"world": ctx.world.interactions.fingerprint()}):
            step_split(ctx)
        ctx.timings["total_s"] = round(time.perf_counter() - t0, 3)
        step_summary(ctx)
        d = ctx.summary["world"]
        run.log_metrics({"impressions": d["events"]["impression"],
                         "clicks": d["events"]["click"], "saves": d["events"]["save"],
                         "hides": d["events"]["hide"],
                         **{f"ctr.{s}": d["surfaces"][s]["ctr"] for s in SURFACES},
                         **{f"time.{k}": v for k, v in ctx.timings.items()}})
        run.log_artifact(out / "summary.json")
        run.log_artifact(out / "report.html")
    return ctx


def demo(
    out: Path = typer.Option(Path("recscope-out"), "--out", "-o", help="Output folder."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Advanced: TOML file "
                                       "of world parameters (e.g. a small world for tests)."),
    seed: int | None = typer.Option(None, "--seed", help="World seed (overrides config)."),
) -> None:
    """Run the demo on the built-in world: generate, split, summarise (report.html)."""
    cfg = load_world_config(config, seed=seed)
    ctx = run_demo(out, cfg)
    d = ctx.summary["world"]
    console.rule("[bold green]done", align="left")
    console.print(f"{d['events']['impression']:,} impressions, {d['events']['click']:,} clicks "
                  f"from {d['active_users']:,} active users in {ctx.timings['total_s']:.1f} s",
                  highlight=False)
    console.print(f"report:  {out / 'report.html'}\nsummary: {out / 'summary.json'}",
                  highlight=False)


# ---------------------------------------------------------------------- helpers
def _unseen_items(split: Split) -> int:
    seen = np.zeros(split.train.n_items, dtype=bool)
    seen[split.train.item_index] = True
    return int(np.unique(split.test.item_index[~seen[split.test.item_index]]).size)


def _report(ctx: DemoContext) -> HtmlReport:
    """The HTML page: the world, the log, engagement by surface and position, the split."""
    import plotly.graph_objects as go

    from recscope.report import HtmlReport

    assert ctx.world is not None
    w, d, cfg = ctx.world, ctx.summary["world"], ctx.config
    rep = HtmlReport("recscope demo: the built-in world",
                     f"A simulated visual-discovery platform (seed {cfg.seed}) with known true "
                     "preferences and a log from a known logging policy.")
    rep.heading("The world")
    rep.key_values({"users": d["n_users"], "pins (items)": d["n_items"],
                    "topics": d["n_topics"], "creators": d["n_creators"],
                    "days logged": cfg.n_days,
                    "time range (UTC)": " – ".join(t[:16].replace("T", " ")
                                                   for t in d["time_range"]),
                    "sessions": d["n_sessions"], "requests (slates)": d["n_requests"],
                    "active users": d["active_users"], "pins shown": d["items_shown"]})
    rep.heading("The log")
    rep.table([{"event": e, "rows": n, "per impression": n / max(1, d["events"]["impression"])}
               for e, n in d["events"].items()])
    rep.table([{"surface": s, "slate size": cfg.surfaces.get(s).slate_size,
                "requests": v["requests"], "impressions": v["impressions"], "CTR": v["ctr"],
                "save rate": v["save_rate"], "hide rate": v["hide_rate"]}
               for s, v in d["surfaces"].items()])
    fig = go.Figure()
    for s, v in d["surfaces"].items():
        fig.add_trace(go.Scatter(x=list(range(len(v["ctr_by_position"]))),
                                 y=v["ctr_by_position"], mode="lines+markers", name=s))
    fig.update_layout(title="Click-through rate by position (position bias + ranking)",
                      xaxis_title="position (0-based)", yaxis_title="CTR", height=380)
    rep.figure(fig)
    fig = go.Figure()
    for s in SURFACES:
        k = cfg.surfaces.get(s).slate_size
        fig.add_trace(go.Scatter(x=list(range(k)), y=w.truth.examination(s, np.arange(k)),
                                 mode="lines+markers", name=s))
    fig.update_layout(title="Ground truth: probability that a user examines each position",
                      xaxis_title="position (0-based)", yaxis_title="P(examine)", height=340)
    rep.paragraph("The logged CTR mixes position bias with the logging policy's ranking "
                  "(better pins are placed higher); the world keeps the true examination "
                  "curve apart, so position-bias corrections can be checked against it.")
    rep.figure(fig)
    table = w.interactions.table
    imp = (table.column("event").to_numpy(zero_copy_only=False) == "impression")
    per_user = np.bincount(table.column("user_id").to_numpy()[imp], minlength=d["n_users"])
    per_item = np.bincount(table.column("item_id").to_numpy()[imp], minlength=d["n_items"])
    rep.heading("Heavy tails")
    rep.paragraph(f"The top 1% of users receive {d['top1pct_user_share']:.1%} of impressions; "
                  f"the top 1% of pins receive {d['top1pct_item_share']:.1%}.")
    x, y = _ccdf(per_user[per_user > 0])
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", name="users"))
    fig.update_layout(title="User activity: share of active users with at least x impressions",
                      xaxis_type="log", yaxis_type="log", xaxis_title="impressions per user",
                      yaxis_title="share of users", height=380)
    rep.figure(fig)
    ranked = np.sort(per_item)[::-1]
    ranked = ranked[ranked > 0]
    fig = go.Figure(go.Scatter(x=np.arange(1, ranked.size + 1), y=ranked, mode="lines",
                               name="pins"))
    fig.update_layout(title="Pin popularity: impressions by popularity rank", xaxis_type="log",
                      yaxis_type="log", xaxis_title="rank", yaxis_title="impressions",
                      height=380)
    rep.figure(fig)
    if "split" in ctx.summary:
        sp = ctx.summary["split"]
        rep.heading("Temporal split")
        rep.paragraph(f"Validation from {sp['validation_start']}, test from "
                      f"{sp['test_start']}; {sp['test_items_unseen_in_train']:,} pins in the "
                      "test period were never logged in training (cold start).")
        rep.table([{"part": k, **sp[k]} for k in ("train", "validation", "test")])
    rep.heading("Timings")
    rep.key_values({k: f"{v:.2f} s" for k, v in ctx.timings.items()})
    rep.paragraph("Every parameter of the generative model, the true preference model and "
                  "the logging policy's propensities are described in docs/world.md.",
                  cls="note")
    return rep


def _ccdf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complementary CDF at each distinct value: share of entries >= value."""
    values, counts = np.unique(x, return_counts=True)
    tail = np.cumsum(counts[::-1])[::-1] / x.size
    return values, tail
