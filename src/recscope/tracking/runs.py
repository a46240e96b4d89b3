"""MLflow-backed runs (see the package docstring)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from recscope.errors import OutputError

EXPERIMENT = "recscope"
DEFAULT_STORE = Path(".recscope")
"""The project's tracking folder, relative to the current folder: ``mlflow.db`` (runs) and
``mlartifacts/`` (their files) live there unless ``--tracking`` or ``MLFLOW_TRACKING_URI``
say otherwise."""
_MAX_PARAM = 500


def tracking_uri(store: str | os.PathLike[str] | None = None) -> str:
    """The MLflow URI runs go to.

    ``store`` (the ``--tracking`` option) wins: a URI (``sqlite:///...``, ``http://...``)
    as it is, or a folder that holds ``mlflow.db``. Without it, ``MLFLOW_TRACKING_URI``
    when set, else the project store ``./.recscope/mlflow.db``. Nothing is created here.
    """
    if store is not None and str(store) != "":
        text = str(store)
        if "://" in text:
            return text
        return f"sqlite:///{Path(os.path.abspath(text)) / 'mlflow.db'}"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(os.path.abspath(DEFAULT_STORE)) / 'mlflow.db'}"


def _local_folder(uri: str) -> tuple[Path, Path | None] | None:
    """(folder, database file) of a local store URI; None for remote stores."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return db.parent, db
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://")), None
    if "://" not in uri:  # a plain path is MLflow's file store
        return Path(uri), None
    return None


def check_store(store: str | os.PathLike[str] | None = None) -> str:
    """Fail at once, in one line, when the tracking store cannot be written.

    MLflow itself retries an unwritable SQLite store for about two minutes and then raises
    a database traceback; this check tries to create a file where the store lives (which
    also works for the root user, for whom permission bits do not apply). Returns the URI.
    Remote stores (``http://``, ``postgresql://``, ...) are not checked.
    """
    uri = tracking_uri(store)
    local = _local_folder(uri)
    if local is None:
        if uri.startswith(("http://", "https://")):
            _check_reachable(uri)
        return uri
    folder, db = local
    where = f"tracking store {uri}"
    for p in [folder, *folder.parents]:
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"{p} is a file, so the {where} cannot be created "
                                  "(choose another with --tracking or MLFLOW_TRACKING_URI)",
                                  path=str(folder))
            break
    if db is not None and db.exists() and not db.is_file():
        raise OutputError(f"{where}: the database path is not a file (choose another with "
                          "--tracking or MLFLOW_TRACKING_URI)", path=str(db))
    nearest = next(p for p in [folder, *folder.parents] if p.exists())
    try:  # nothing is created here: the folder appears with the first run
        fd, probe = tempfile.mkstemp(prefix=".recscope-probe.", dir=nearest)
        os.close(fd)
        os.unlink(probe)
        if db is not None and db.exists():
            with db.open("r+b"):
                pass
    except OSError as exc:
        raise OutputError(f"cannot write the {where}: {exc.strerror or exc} (choose another "
                          "with --tracking or MLFLOW_TRACKING_URI)", path=str(folder)) from None
    return uri


def _check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail in one line when a tracking server does not answer a TCP connection (MLflow
    would retry its HTTP calls for minutes)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=timeout).close()
    except OSError as exc:
        raise OutputError(f"cannot reach the tracking server: {exc.strerror or exc} (choose "
                          "another store with --tracking or MLFLOW_TRACKING_URI)",
                          path=uri) from None


def _store_error(uri: str, exc: BaseException) -> OutputError:
    """An MLflow/SQLAlchemy failure as one line naming the store."""
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    return OutputError(f"tracking store failed: {text}", path=uri)


class RunLogger:
    """Handle on a run: log metrics, dictionaries and output files.

    The MLflow run is created on the first call that logs something (or when the ``track``
    block ends without an error), so a command that fails on bad input before it logs
    leaves no run behind.
    """

    def __init__(self, name: str, uri: str, params: Mapping[str, str], config: Mapping[str, Any],
                 tags: Mapping[str, str], parent: RunLogger | None) -> None:
        self.name = name
        self.uri = uri
        self._params = dict(params)
        self._config = dict(config)
        self._tags = dict(tags)
        self._parent = parent
        self._client: Any = None
        self._run_id: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def started(self) -> bool:
        """True once the MLflow run exists."""
        return self._run_id is not None

    @property
    def run_id(self) -> str:
        """The MLflow run id (creates the run if it does not exist yet)."""
        self._start()
        assert self._run_id is not None
        return self._run_id

    def _start(self) -> None:
        if self._run_id is not None:
            return
        try:
            self._create()
        except OutputError:
            raise
        except Exception as exc:  # MLflow / SQLAlchemy errors: one line naming the store
            raise _store_error(self.uri, exc) from None

    def _create(self) -> None:
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic", "sqlalchemy"):
            logging.getLogger(name).setLevel(logging.ERROR)
        parent_id = self._parent.run_id if self._parent is not None else None
        local = _local_folder(self.uri)
        if local is not None:
            local[0].mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            artifact_location = None
            if local is not None and local[1] is not None:
                artifact_location = (local[0] / "mlartifacts").as_uri()
            exp_id = client.create_experiment(EXPERIMENT, artifact_location=artifact_location)
        else:
            exp_id = exp.experiment_id
        tags = {"recscope.command": self.name, "mlflow.runName": self.name, **self._tags}
        if parent_id is not None:
            tags["mlflow.parentRunId"] = parent_id
        run = client.create_run(exp_id, tags=tags, run_name=self.name)
        self._client = client
        self._run_id = run.info.run_id
        for key, value in self._params.items():
            client.log_param(self._run_id, key, value)
        if self._config:
            self.log_dict(self._config, "config.json")

    def _end(self, status: str) -> None:
        if self._run_id is not None:
            self._call("set_terminated", self._run_id, status=status)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._start()
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:
            raise _store_error(self.uri, exc) from None

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (non-finite values are skipped; names are sanitised)."""
        for name, value in metrics.items():
            if value is None or not math.isfinite(float(value)):
                continue
            self._call("log_metric", self.run_id, _clean_key(name), float(value),
                       step=step or 0)

    def log_dict(self, obj: Any, name: str) -> None:
        """Store ``obj`` as a JSON artifact called ``name``."""
        from recscope.io import jsonable

        self._call("log_text", self.run_id, json.dumps(jsonable(obj), indent=2), name)

    def log_artifact(self, path: str | Path) -> None:
        """Store an output file (or every file of a directory)."""
        p = Path(path)
        if p.is_dir():
            self._call("log_artifacts", self.run_id, str(p), artifact_path=p.name)
        elif p.exists():
            self._call("log_artifact", self.run_id, str(p))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set string tags on the run."""
        for k, v in tags.items():
            self._call("set_tag", self.run_id, k, str(v))


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
    store: str | os.PathLike[str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[RunLogger]:
    """A run named ``name`` for the block, nested under the active run (if any).

    Call it once the inputs are validated. The store (``store``, else
    ``MLFLOW_TRACKING_URI``, else ``./.recscope/mlflow.db``; see :func:`tracking_uri`) is
    checked at once and fails in one line when it cannot be written. The MLflow run itself
    is created lazily, on the first logging call or when the block ends cleanly: a block
    that raises before logging anything leaves no run; one that raises later ends FAILED.
    ``config`` is logged as flattened params and as ``config.json``; ``inputs`` maps an
    input's name to its fingerprint (``input.<name>`` params).
    """
    parent = _active[-1] if _active else None
    uri = parent.uri if parent is not None and store is None else check_store(store)
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config or {})
    params = {_clean_key(k): str(v)[:_MAX_PARAM] for k, v in _flatten(cfg).items()}
    params.update({_clean_key(f"input.{k}"): str(v)[:_MAX_PARAM]
                   for k, v in (inputs or {}).items()})
    logger = RunLogger(name, uri, params, cfg, dict(tags or {}), parent)
    _active.append(logger)
    try:
        yield logger
    except BaseException:
        _active.pop()
        if logger.started:
            with contextlib.suppress(Exception):
                logger._end("KILLED" if _interrupted() else "FAILED")
        raise
    _active.pop()
    logger._start()
    logger._end("FINISHED")


def _interrupted() -> bool:
    import sys

    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


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
