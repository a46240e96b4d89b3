"""Tracking: a thin layer over MLflow so every command leaves a reproducible record.

Each command that trains, evaluates or analyses opens a run with :func:`track`. The run
logs the command's config, a fingerprint of each input, its metrics and its output files,
and nests under the run that is active (so a demo's steps appear under the demo). The
store is ``MLFLOW_TRACKING_URI`` when set, else a SQLite file in the output folder.
"""

from recscope.tracking.runs import RunLogger, track, tracking_uri

__all__ = ["RunLogger", "track", "tracking_uri"]
