"""``recscope demo``: the README's main job, the whole measurement story in one command.

The story itself lives in :mod:`recscope.story` (world ► stacks ► offline benchmark ►
simulated 2×2 experiment ► scorecard ► attribution, each beside its ground truth); this
module shows its progress and prints the headline results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import TaskID
from rich.table import Table

from recscope.cli.common import Force, Tracking, check_outputs, console, progress
from recscope.errors import ConfigError


def demo(
    out: Path = typer.Option(Path("recscope-out"), "--out", "-o", metavar="FOLDER",
                             help="Output folder (an existing non-empty one needs --force)."),
    force: Force = False,
    scale: str = typer.Option("default", "--scale", help="default (20,000 users, ~1 minute "
                              "on 2 cores) or small (a few hundred users, for tests)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the world and the experiment (0 or "
                             "more)."),
    tracking: Tracking = None,
) -> None:
    """Run the measurement story on the built-in world; write report.html, summary.json
    and the simulated experiment's logs (experiment/) into --out.

    Example: recscope demo --scale small --out demo-out/
    """
    from recscope.story import SCALES, run_story

    if scale not in SCALES:
        raise ConfigError(f"must be one of {', '.join(sorted(SCALES))} (got {scale!r})",
                          key="--scale")
    if seed < 0:
        raise ConfigError(f"must be 0 or more (got {seed})", key="--seed")
    check_outputs(folder=out, force=force, tracking=tracking)

    t0 = time.perf_counter()
    with progress() as bar:
        tasks: dict[str, TaskID] = {}

        def tick(stage: str, done: float, total: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(float(total), 1.0))
            bar.update(tasks[stage], completed=float(done), total=max(float(total), 1.0))

        summary = run_story(out, scale=scale, progress=tick, seed=seed, force=force,
                            tracking=tracking)
    console.print(_headline(summary))
    console.print(f"done in {time.perf_counter() - t0:.0f} s\nreport:  {out / 'report.html'}"
                  f"\nsummary: {out / 'summary.json'}", highlight=False)


def _headline(summary: dict[str, Any]) -> Table:
    """Full stack vs baseline per metric: estimate, interval, truth, Shapley shares."""
    t = Table(title="Full stack vs baseline (estimate beside ground truth)")
    for c in ("metric", "estimate", "95% CI", "truth", "retriever share\nest. / true",
              "ranker share\nest. / true"):
        t.add_column(c, justify="left" if c == "metric" else "right", overflow="fold")
    for name, m in summary["metrics"].items():
        att = m.get("attribution", {})
        shares = [f"{att[c]['share']:.0%} / {att[c]['true_share']:.0%}" if c in att else "–"
                  for c in ("retriever", "ranker")]
        truth = m.get("truth")
        t.add_row(name, f"{m['estimate']:.3g}", f"[{m['ci_low']:.3g}, {m['ci_high']:.3g}]",
                  "–" if truth is None else f"{truth:.3g}" + ("" if m.get("covered") else " ✗"),
                  *shares)
    t.caption = "✗: the interval misses the truth"
    return t
