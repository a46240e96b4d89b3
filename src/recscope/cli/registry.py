"""``recscope registry``: registered models, champion/challenger aliases and lineage.

Contracts:

* ``recscope registry gate MODEL_DIR --name NAME --test DATA [--metric ndcg@10]
  [--margin 0] [--alpha 0.05] --out gate.json`` evaluates MODEL_DIR and the current
  champion of NAME on the same test users and writes the paired test (the gate file).
* ``recscope registry register MODEL_DIR --name NAME [--gate gate.json]`` registers a new
  version (alias ``challenger``); it becomes ``champion`` when NAME has none yet or when the
  gate shows a significant improvement beyond its margin. A gate about another model,
  another training data fingerprint or another champion is refused before anything is
  registered (exit 2).
* ``recscope registry list [--name NAME]``, ``show NAME[@alias|/version]``,
  ``promote NAME VERSION [--gate gate.json | --force]`` print and move aliases with lineage.

The store is the project's tracking store (``--tracking`` folder or URI, else
``MLFLOW_TRACKING_URI``, else ``./.recscope``), the same one runs go to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from recscope.cli.common import console

app = typer.Typer(help="Registered models: gate, register, list, show, promote.",
                  no_args_is_help=True)

Tracking = Annotated[str | None, typer.Option("--tracking", help="MLflow store (folder or "
                                              "URI); default: the project store")]


def _uri(tracking: str | None) -> str:
    from recscope.tracking import check_store

    return check_store(tracking)


@app.command("gate")
def gate(
    model_dir: Annotated[Path, typer.Argument(help="candidate model directory")],
    name: Annotated[str, typer.Option("--name", help="registered model to beat (its "
                                      "champion)")],
    test: Annotated[Path, typer.Option("--test", help="test interactions (external ids)")],
    out: Annotated[Path, typer.Option("--out", help="gate JSON to write")],
    metric: Annotated[str, typer.Option("--metric", help="metric of the paired test")
                      ] = "ndcg@10",
    margin: Annotated[float, typer.Option("--margin", help="the improvement must exceed "
                                          "this (lower interval end > margin)")] = 0.0,
    alpha: Annotated[float, typer.Option("--alpha", help="significance level")] = 0.05,
    tracking: Tracking = None,
    data_format: Annotated[str, typer.Option("--format")] = "auto",
) -> None:
    """Paired test of MODEL_DIR against NAME's champion on TEST, written as a gate file.

    Example: recscope registry gate out/model-v2 --name ml100k --test split/test --out gate.json
    """
    from recscope.data.loaders import load
    from recscope.errors import ConfigError
    from recscope.io import check_out_file, write_json
    from recscope.offline.metrics import parse_metrics
    from recscope.orchestration import registry as reg

    reg.check_name(name)
    parse_metrics([metric])
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}", key="--alpha")
    reg.read_info(model_dir)
    check_out_file(out)
    data = load(test, data_format)
    uri = _uri(tracking)
    champ = reg.champion(uri, name)
    if champ is None:
        raise ConfigError(f"model {name!r} has no champion to compare with; register the "
                          "first version without a gate", key="--name")
    base = reg.load_registered(f"models:/{name}@champion", store=uri)
    g = reg.make_gate(model_dir, data, baseline_dir=base.path, metric=metric, margin=margin,
                      alpha=alpha, baseline={
                          "label": f"{name}/{champ.version}", "name": name,
                          "version": str(champ.version),
                          "model_fingerprint": dict(champ.tags).get(
                              "recscope.model_fingerprint")})
    write_json(out, g.to_dict())
    reg.record_use(uri, name, str(champ.version), "gate", str(out.resolve()))
    console.print(g.statement(), highlight=False)
    console.print(f"gate → {out}")


@app.command("register")
def register(
    model_dir: Annotated[Path, typer.Argument(help="model directory (recscope train/tune)")],
    name: Annotated[str, typer.Option("--name", help="registered model name")],
    gate_file: Annotated[Path | None, typer.Option("--gate", help="gate JSON from "
                                                   "'recscope registry gate'")] = None,
    tracking: Tracking = None,
) -> None:
    """Register MODEL_DIR as a new version of NAME (challenger; champion if the gate passes).

    Example: recscope registry register out/model-v2 --name ml100k --gate gate.json
    """
    from recscope.orchestration import registry as reg

    reg.check_name(name)
    reg.read_info(model_dir)
    g = reg.read_gate(gate_file) if gate_file is not None else None
    uri = _uri(tracking)
    r = reg.register(model_dir, name, uri=uri, gate=g,
                     gate_file=str(gate_file) if gate_file else None)
    console.print(f"registered [bold]{r.name}[/] version {r.version} "
                  f"({', '.join(r.aliases)})")
    console.print(("promoted to champion: " if r.promoted else "not promoted: ") + r.reason,
                  highlight=False)


@app.command("list")
def list_(
    name: Annotated[str | None, typer.Option("--name", help="only this model")] = None,
    tracking: Tracking = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every registered version with its aliases and lineage.

    Example: recscope registry list --name ml100k
    """
    from recscope.orchestration import registry as reg

    rows = reg.versions(_uri(tracking), name)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    t = Table(title="Registered models")
    for col in ("name", "version", "aliases", "data", "model", "decision"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["version"], ", ".join(r["aliases"]),
                  str(r["data_fingerprint"]), str(r["model_fingerprint"]),
                  str(r["decision"] or ""))
    console.print(t)


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@alias or NAME/VERSION")],
    tracking: Tracking = None,
) -> None:
    """One version's lineage: data and model fingerprints, config, metrics, gate, uses.

    Example: recscope registry show ml100k@champion
    """
    from recscope.errors import ConfigError
    from recscope.orchestration import registry as reg

    name, _, rest = ref.replace("@", "/@").partition("/")
    rows = reg.versions(_uri(tracking), name)
    if rest.startswith("@"):
        pick = [r for r in rows if rest[1:] in r["aliases"]]
    elif rest:
        pick = [r for r in rows if r["version"] == rest]
    else:
        pick = rows[-1:]
    if not pick:
        raise ConfigError(f"no version {rest or ''} of {name!r}", key="ref")
    r = pick[0]
    console.print(f"[bold]{r['name']}[/] version {r['version']} "
                  f"({', '.join(r['aliases']) or 'no alias'}), run {r['run_id']}")
    for k, v in sorted(r["tags"].items()):
        if k.startswith("recscope.") and k != "recscope.config":
            console.print(f"  {k.removeprefix('recscope.')}: {v}", highlight=False)
    console.print(f"  config: {r['tags'].get('recscope.config', '')}", highlight=False)


@app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="registered model")],
    version: Annotated[str, typer.Argument(help="version to make champion")],
    gate_file: Annotated[Path | None, typer.Option("--gate", help="gate JSON")] = None,
    force: Annotated[bool, typer.Option("--force", help="promote without a passing gate "
                                        "(recorded)")] = False,
    tracking: Tracking = None,
) -> None:
    """Move the champion alias to VERSION when its gate passes (or with --force).

    Example: recscope registry promote ml100k 3 --gate gate-v3.json
    """
    from recscope.orchestration import registry as reg

    g = reg.read_gate(gate_file) if gate_file is not None else None
    r = reg.promote(_uri(tracking), name, version, gate=g,
                    gate_file=str(gate_file) if gate_file else None, force=force)
    console.print(("promoted to champion: " if r.promoted else "not promoted: ") + r.reason,
                  highlight=False)
