"""Recommender components behind one protocol (see :mod:`recscope.models.base`)."""

from recscope.models.base import (
    REGISTRY,
    Component,
    ComponentConfig,
    NotFittedError,
    get_component,
    register,
    top_k,
)

__all__ = [
    "REGISTRY",
    "Component",
    "ComponentConfig",
    "NotFittedError",
    "get_component",
    "register",
    "top_k",
]
