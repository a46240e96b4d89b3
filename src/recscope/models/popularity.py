"""Popularity baselines: global counts, counts on one surface, time-decayed counts."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from recscope.data.interactions import Interactions
from recscope.errors import ConfigError
from recscope.models.base import Component, ComponentConfig, register

_DAY_US = 86_400 * 1_000_000


class PopularityConfig(ComponentConfig):
    """``count``: interactions (``users``: distinct users); ``surface``: count only rows
    of that surface; ``half_life_days``: weight each row by 0.5^(age / half-life), age
    measured from the newest training row (``None``: no decay)."""

    count: Literal["interactions", "users"] = "interactions"
    surface: str | None = None
    half_life_days: float | None = Field(default=None, gt=0)


@register("popularity")
class Popularity(Component):
    """Everyone gets the same list: the most popular items they have not seen.

    Global popularity is the classic non-personalised baseline; the per-surface and
    time-decayed variants are the ones production systems actually serve as fallbacks.
    """

    Config = PopularityConfig
    config: PopularityConfig

    def __init__(self, config: PopularityConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.item_scores: np.ndarray | None = None

    def _fit(self, train: Interactions) -> None:
        cfg = self.config
        mask = np.ones(len(train), dtype=bool)
        if cfg.surface is not None:
            if "surface" not in train.table.column_names:
                raise ConfigError("surface given but the training data has no 'surface' "
                                  "column", key="surface")
            mask = train.column("surface") == cfg.surface
        ii, ui = train.item_index[mask], train.user_index[mask]
        weight = np.ones(int(mask.sum()))
        if cfg.half_life_days is not None and mask.any():
            ts = train.timestamps[mask]
            age_days = (ts.max() - ts) / _DAY_US
            weight = np.power(0.5, age_days / cfg.half_life_days)
        if cfg.count == "users":
            key = ui.astype(np.int64) * train.n_items + ii
            _, first = np.unique(key, return_index=True)
            # a pair counts once, with the weight of its most recent row
            order = np.lexsort((-weight, key))
            first = order[np.r_[0, np.flatnonzero(np.diff(key[order])) + 1]] if len(key) else first
            ii, weight = ii[first], weight[first]
        self.item_scores = np.bincount(ii, weights=weight, minlength=train.n_items).astype(
            np.float32)

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        assert self.item_scores is not None
        return np.broadcast_to(self.item_scores, (len(users), self.n_items)).copy()

    def _scores(self, users: np.ndarray) -> np.ndarray:
        # cold users get the same (configured) popularity as everyone else
        assert self.item_scores is not None and self._popularity is not None
        out = np.broadcast_to(self.item_scores, (len(users), self.n_items)).copy()
        out[:, self._popularity == 0] = -np.inf
        return out

    def _state(self) -> dict[str, np.ndarray]:
        assert self.item_scores is not None
        return {"item_scores": self.item_scores}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_scores = arrays["item_scores"]
