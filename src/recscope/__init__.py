"""recscope: a measurement platform for multi-stage recommender systems.

The front door: the few calls a user starts from, imported on first use so that
``import recscope`` stays light (no DuckDB, MLflow or PyTorch until they are needed)::

    import recscope
    data = recscope.load("../shared/data/ml-100k")           # canonical interactions
    result = recscope.evaluate(rankings, truth, ["ndcg@10"])  # metrics with intervals
    card = recscope.analyze("assign.parquet", ["events.parquet"], config)

=====================  ==========================================
``load``               :func:`recscope.data.loaders.load`
``read_interactions``  :func:`recscope.data.read_interactions`
``evaluate``           :func:`recscope.offline.evaluate`
``compare``            :func:`recscope.offline.compare`
``analyze``            :func:`recscope.experiments.analyze`
``attribute``          :func:`recscope.attribution.attribute`
``World``              :class:`recscope.sim.World`
``Environment``        :class:`recscope.sim.Environment`
``run_experiment``     :func:`recscope.sim.run_experiment`
=====================  ==========================================
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_FRONT_DOOR: dict[str, str] = {
    "load": "recscope.data.loaders",
    "read_interactions": "recscope.data",
    "evaluate": "recscope.offline",
    "compare": "recscope.offline",
    "analyze": "recscope.experiments",
    "attribute": "recscope.attribution",
    "World": "recscope.sim",
    "Environment": "recscope.sim",
    "run_experiment": "recscope.sim",
}

__all__ = [
    "Environment",
    "World",
    "__version__",
    "analyze",
    "attribute",
    "compare",
    "evaluate",
    "load",
    "read_interactions",
    "run_experiment",
]

if TYPE_CHECKING:
    from recscope.attribution import attribute
    from recscope.data import read_interactions
    from recscope.data.loaders import load
    from recscope.experiments import analyze
    from recscope.offline import compare, evaluate
    from recscope.sim import Environment, World, run_experiment


def __getattr__(name: str) -> Any:
    """Import a front-door name from its package on first use (PEP 562)."""
    module = _FRONT_DOOR.get(name)
    if module is None:
        raise AttributeError(f"module 'recscope' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_FRONT_DOOR})
