"""Recommender components behind one protocol (see :mod:`recscope.models.base`).

Built-in components (registered names): ``popularity``, ``random``, ``itemknn``,
``ease``, ``als``, ``bpr``, ``ann``, ``union`` (retrievers), ``lambdamart`` (ranker),
``mmr``, ``calibrated``, ``min_exposure``, ``rules`` (re-rankers), ``linucb``,
``thompson`` (bandits) and ``pipeline``. Modules are imported on first lookup, so
``get_component(name)`` and ``Component.load(path)`` always see them.
"""

from recscope.models.base import (
    REGISTRY,
    Component,
    ComponentConfig,
    ComponentSpec,
    NotFittedError,
    Stage,
    get_component,
    load_builtin,
    register,
    top_k,
)

__all__ = [
    "REGISTRY",
    "Component",
    "ComponentConfig",
    "ComponentSpec",
    "NotFittedError",
    "Stage",
    "get_component",
    "load_builtin",
    "register",
    "top_k",
]
