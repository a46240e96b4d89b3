"""Tracking: a thin layer over MLflow so every command leaves a reproducible record.

Every command that trains, evaluates or analyses records a run with :func:`track` once
its inputs are validated. The run logs the command's config, a fingerprint of each input,
its metrics and its output files, and nests under the run that is active (so a demo's
steps appear under the demo). One store per project: ``./.recscope/mlflow.db`` in the
current folder, or ``MLFLOW_TRACKING_URI`` when set, or the ``--tracking`` option of a
command (a folder or a URI). ``mlflow ui --backend-store-uri sqlite:///.recscope/mlflow.db``
shows every run. :func:`check_store` fails in one line when the store cannot be written.
"""

from recscope.tracking.runs import (
    DEFAULT_STORE,
    RunLogger,
    active_run,
    check_store,
    track,
    tracking_uri,
)

__all__ = ["DEFAULT_STORE", "RunLogger", "active_run", "check_store", "track", "tracking_uri"]
