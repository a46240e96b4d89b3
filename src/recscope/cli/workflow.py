"""``recscope workflow``: run a workflow file locally, show its state, export it to Airflow.

Contracts:

* ``recscope workflow run WORKFLOW.toml [--task NAME] [--retries N]`` runs the tasks in
  dependency order; a task whose content key did not change since it last finished is
  skipped, a failing task is retried and then stops the run (exit 2, one line naming the
  task and its log, ``<workdir>/logs/<task>.log``).
* ``recscope workflow status WORKFLOW.toml`` prints each task's key and state.
* ``recscope workflow airflow WORKFLOW.toml --out dags/ [--python PATH]`` writes an Airflow
  DAG whose tasks call the same runner (``--task``) with the project's Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from recscope.cli.common import console

app = typer.Typer(help="Declarative workflows: run locally, show state, export to Airflow.",
                  no_args_is_help=True)


@app.command("run")
def run(
    workflow: Annotated[Path, typer.Argument(help="workflow TOML (see examples/workflow*.toml)")],
    task: Annotated[str | None, typer.Option("--task", help="run only this task (its inputs "
                                             "must be done)")] = None,
    retries: Annotated[int | None, typer.Option("--retries", min=0, help="retries per task "
                                                "(default: the file's)")] = None,
) -> None:
    """Run WORKFLOW (skipping tasks whose inputs did not change).

    Example: recscope workflow run examples/workflow.toml
    """
    import time

    from recscope.orchestration.workflow import load_workflow
    from recscope.orchestration.workflow import run as run_workflow

    wf = load_workflow(workflow)
    t0 = time.perf_counter()
    outcomes = run_workflow(wf, only=task, retries=retries,
                            echo=lambda m: console.print(m, highlight=False))
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    console.print(f"workflow {wf.config.name}: {done} task(s) run, {skipped} skipped in "
                  f"{time.perf_counter() - t0:.1f}s → {wf.workdir}")


@app.command("status")
def status(workflow: Annotated[Path, typer.Argument(help="workflow TOML")]) -> None:
    """Each task's content key and whether its output is up to date.

    Example: recscope workflow status examples/workflow.toml
    """
    from recscope.orchestration.workflow import load_workflow
    from recscope.orchestration.workflow import status as wf_status

    wf = load_workflow(workflow)
    t = Table(title=f"Workflow {wf.config.name}")
    for col in ("task", "op", "key", "state"):
        t.add_column(col)
    for r in wf_status(wf):
        t.add_row(r["task"], r["op"], r["key"], r["state"])
    console.print(t)


@app.command("airflow")
def airflow(
    workflow: Annotated[Path, typer.Argument(help="workflow TOML")],
    out: Annotated[Path, typer.Option("--out", help="DAG folder to write into")],
    python: Annotated[str | None, typer.Option("--python", help="interpreter the Airflow "
                                               "tasks run recscope with (default: this one)")
                      ] = None,
) -> None:
    """Write an Airflow DAG for WORKFLOW (one task per step, same runner).

    Example: recscope workflow airflow examples/workflow.toml --out dags/
    """
    from recscope.io import check_out_file
    from recscope.orchestration.airflow import dag_id, write_dag
    from recscope.orchestration.workflow import check_configs, load_workflow

    wf = load_workflow(workflow)
    check_configs(wf)
    check_out_file(out / f"{dag_id(wf)}.py")
    path = write_dag(wf, out, python=python)
    console.print(f"DAG {dag_id(wf)} ({len(wf.order)} tasks) → {path}")
