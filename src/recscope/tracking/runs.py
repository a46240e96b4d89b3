"""MLflow-backed runs (see the package docstring)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

EXPERIMENT = "recscope"
_MAX_PARAM = 500


def tracking_uri(out_dir: str | Path | None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<out_dir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(out_dir if out_dir is not None else "recscope-out").resolve()
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'mlflow.db'}"


class RunLogger:
    """Handle on an open run: log metrics, dictionaries and output files."""

    def __init__(self, run_id: str, client: Any, uri: str) -> None:
        self.run_id = run_id
        self.uri = uri
        self._client = client

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (non-finite values are skipped; names are sanitised)."""
        import math

        for name, value in metrics.items():
            if value is None or not math.isfinite(float(value)):
                continue
            self._client.log_metric(self.run_id, _clean_key(name), float(value),
                                    step=step or 0)

    def log_dict(self, obj: Any, name: str) -> None:
        """Store ``obj`` as a JSON artifact called ``name``."""
        from recscope.io import jsonable

        self._client.log_text(self.run_id, json.dumps(jsonable(obj), indent=2), name)

    def log_artifact(self, path: str | Path) -> None:
        """Store an output file (or every file of a directory)."""
        p = Path(path)
        if p.is_dir():
            self._client.log_artifacts(self.run_id, str(p), artifact_path=p.name)
        elif p.exists():
            self._client.log_artifact(self.run_id, str(p))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self._client.set_tag(self.run_id, k, str(v))


_active: list[RunLogger] = []


def active_run() -> RunLogger | None:
    """The innermost run opened by :func:`track` that is still open (None outside one),
    so library code can log into the caller's run, e.g. per-epoch learning curves."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def track(
    name: str,
    *,
    config: BaseModel | Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    out_dir: str | Path | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[RunLogger]:
    """Open a run named ``name`` under the active run (if any); close it on exit.

    ``config`` is logged as flattened params and as ``config.json``; ``inputs`` maps an
    input's name to its fingerprint (logged as ``input.<name>`` params). The run ends
    FAILED when the block raises.
    """
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    uri = tracking_uri(out_dir) if not _active else _active[-1].uri
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        artifact_location = None
        if uri.startswith("sqlite:///"):
            artifact_location = (Path(uri.removeprefix("sqlite:///")).parent
                                 / "mlartifacts").as_uri()
        exp_id = client.create_experiment(EXPERIMENT, artifact_location=artifact_location)
    else:
        exp_id = exp.experiment_id
    run_tags = {"recscope.command": name, "mlflow.runName": name, **(tags or {})}
    if _active:
        run_tags["mlflow.parentRunId"] = _active[-1].run_id
    run = client.create_run(exp_id, tags=run_tags, run_name=name)
    logger = RunLogger(run.info.run_id, client, uri)
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config or {})
    params = _flatten(cfg)
    for key, value in (inputs or {}).items():
        params[f"input.{key}"] = value
    for key, value in params.items():
        client.log_param(logger.run_id, _clean_key(key), str(value)[:_MAX_PARAM])
    if cfg:
        logger.log_dict(cfg, "config.json")
    _active.append(logger)
    status = "FINISHED"
    try:
        yield logger
    except BaseException:
        status = "FAILED"
        raise
    finally:
        _active.pop()
        client.set_terminated(logger.run_id, status=status)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _clean_key(key: str) -> str:
    """MLflow keys allow alphanumerics, _ - . space / ; map others (like @) to _."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)
