"""The one progress-callback type: lower layers report progress through it and the CLI
turns it into Rich bars (no package below ``cli`` imports a progress bar)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, float, float], None]
"""``progress(stage, done, total)``: ``done`` of ``total`` units of work (days, batches,
impressions, stages...) of the stage named ``stage`` are finished."""


def report(progress: Progress | None, stage: str, done: float, total: float) -> None:
    """Call ``progress`` when one was given."""
    if progress is not None:
        progress(stage, done, total)
