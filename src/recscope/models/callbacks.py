"""Callbacks a training run reports through, so that models never import the CLI or
tracking: ``progress(stage, done, total)`` (the CLI draws Rich bars), ``log_metrics(metrics,
step)`` (the CLI passes its tracking run's ``log_metrics``) and ``on_epoch(epoch, metrics)
-> stop?`` (tuning prunes with it).

Callers either pass them to ``fit`` explicitly or set them for everything fitted inside a
block with :func:`training_callbacks` (how a pipeline's stages receive them)::

    with training_callbacks(progress=bar_tick, log_metrics=run.log_metrics):
        pipeline.fit(train)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from recscope.core.progress import Progress

MetricLogger = Callable[[Mapping[str, float], int | None], None]
"""``log_metrics(metrics, step)``: record numeric metrics at a step (an epoch)."""

EpochCallback = Callable[[int, dict[str, float]], bool]
"""``on_epoch(epoch, metrics) -> bool``: called after each epoch; True stops training."""


@dataclass(frozen=True)
class TrainingCallbacks:
    """The callbacks in effect (each may be None)."""

    progress: Progress | None = None
    log_metrics: MetricLogger | None = None


_NONE = TrainingCallbacks()
_CURRENT: ContextVar[TrainingCallbacks | None] = ContextVar("recscope_training_callbacks",
                                                            default=None)


@contextlib.contextmanager
def training_callbacks(*, progress: Progress | None = None,
                       log_metrics: MetricLogger | None = None) -> Iterator[TrainingCallbacks]:
    """Set the callbacks for every ``fit`` inside the block (restored afterwards)."""
    callbacks = TrainingCallbacks(progress, log_metrics)
    token = _CURRENT.set(callbacks)
    try:
        yield callbacks
    finally:
        _CURRENT.reset(token)


def current_callbacks() -> TrainingCallbacks:
    """The callbacks set by the innermost :func:`training_callbacks` block."""
    return _CURRENT.get() or _NONE
