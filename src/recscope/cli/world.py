"""``recscope world ...``: generate the built-in world (see docs/world.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from recscope.cli.common import Force, check_outputs, console, progress
from recscope.errors import ConfigError

if TYPE_CHECKING:
    from recscope.sim import World, WorldConfig

app = typer.Typer(help="The built-in world: a simulated visual-discovery platform with "
                  "known true preferences and a logged history.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """The built-in world: a simulated visual-discovery platform with known true
    preferences and a logged history (see docs/world.md)."""


def generate_with_progress(config: WorldConfig) -> World:
    """Generate ``config``'s world with a Rich progress bar over logged impressions."""
    from recscope.sim import World

    with progress() as bar:
        task = bar.add_task("generating world (impressions)", total=config.n_impressions)

        def update(_stage: str, done: float, total: float) -> None:
            bar.update(task, completed=done, total=total)

        return World.generate(config, progress=update)


@app.command("generate")
def generate(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML file of "
                                       "WorldConfig keys (see docs/world.md); defaults for "
                                       "every key left out."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (overrides the "
                                    "config's; 0 or more)."),
    out: Path = typer.Option(Path("recscope-out/world"), "--out", "-o", metavar="FOLDER",
                             help="Output folder (an existing non-empty one needs --force)."),
    force: Force = False,
) -> None:
    """Generate the world and save it: Parquet log, side tables, truth and config.json.

    The same config and seed give byte-identical files.

    Example: recscope world generate --seed 1 --out world/
    """
    from recscope.sim import load_world_config

    if seed is not None and seed < 0:
        raise ConfigError(f"must be 0 or more (got {seed})", key="--seed")
    if config is not None and not config.is_file():
        raise ConfigError("is a folder; expected a world TOML file" if config.exists()
                          else "world config file not found", file=str(config))
    check_outputs(folder=out, force=force, track=False)
    cfg = load_world_config(config, seed=seed)
    world = generate_with_progress(cfg)
    with console.status("writing Parquet files"):
        world.save(out, force=force)
    d = world.describe()
    ev = d["events"]
    console.print(
        f"[bold green]world written[/] to {out}: {d['n_users']:,} users, "
        f"{d['n_items']:,} items, {ev['impression']:,} impressions, {ev['click']:,} clicks, "
        f"{ev['save']:,} saves, {ev['hide']:,} hides (seed {cfg.seed})", highlight=False)
