"""Uniformly random recommendations: the floor every other component must beat."""

from __future__ import annotations

import numpy as np

from recscope.core.splitmix import GOLDEN, finalize_np
from recscope.data.interactions import Interactions
from recscope.models.base import Component, ComponentConfig, register

_GOLD = np.uint64(GOLDEN)


def hashed_uniform(seed: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) number per (seed, user, item), the same on every call."""
    with np.errstate(over="ignore"):
        s = finalize_np(np.uint64(seed % 2**64) * _GOLD + np.uint64(1))
        u = finalize_np(s ^ (users.astype(np.uint64) * _GOLD))
        x = finalize_np(u[:, None] ^ (items.astype(np.uint64)[None, :] + _GOLD))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


@register("random")
class Random(Component):
    """Scores are a hash of (seed, user, item): random, yet identical on every call, so
    ``score`` and ``recommend`` agree and a saved model recommends the same lists."""

    Config = ComponentConfig

    def _fit(self, train: Interactions) -> None:
        """Nothing to learn."""

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        return hashed_uniform(self.config.seed, users, np.arange(self.n_items)).astype(
            np.float32)

    def _scores(self, users: np.ndarray) -> np.ndarray:
        # cold users are random too (no popularity fallback for a random baseline)
        out = hashed_uniform(self.config.seed, users, np.arange(self.n_items)).astype(
            np.float32)
        assert self._popularity is not None
        out[:, self._popularity == 0] = -np.inf
        return out
