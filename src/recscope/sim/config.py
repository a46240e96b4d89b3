"""Configuration of the built-in world: every parameter of the generative model.

All parameters are documented in ``docs/world.md``; the defaults give a platform with
20,000 users, 10,000 pins and 1,000,000 logged impressions over four weeks. Unknown keys
are errors (:class:`recscope.errors.ConfigError` names the key and the file).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from recscope.config import StrictModel, validate
from recscope.errors import ConfigError
from recscope.io import read_toml

SURFACES: tuple[str, ...] = ("home_feed", "related", "search")


class _Strict(StrictModel):
    """A strict (:class:`recscope.config.StrictModel`), immutable config section."""

    model_config = ConfigDict(frozen=True)


class SurfaceConfig(_Strict):
    """One surface: its slate size, its position bias and its base engagement level.

    A user examines position ``p`` (0-based) with probability ``(1 + p) ** -position_decay``;
    ``click_base`` is the intercept of the click logit on this surface.
    """

    slate_size: int = Field(ge=1, le=100)
    position_decay: float = Field(ge=0.0, le=5.0)
    click_base: float = Field(ge=-12.0, le=6.0)
    scroll_seconds: float = Field(default=1.0, ge=0.0, le=60.0,
                                  description="time between impressions of two positions")


_SURFACE_DEFAULTS: dict[str, dict[str, float]] = {
    "home_feed": {"slate_size": 16, "position_decay": 0.6, "click_base": -5.2,
                  "scroll_seconds": 1.5},
    "related": {"slate_size": 8, "position_decay": 0.9, "click_base": -5.0,
                "scroll_seconds": 1.0},
    "search": {"slate_size": 10, "position_decay": 1.2, "click_base": -4.2,
               "scroll_seconds": 1.0},
}


class SurfacesConfig(_Strict):
    """The three surfaces. A TOML table may set only some keys of a surface; the rest
    keep their defaults."""

    home_feed: SurfaceConfig = SurfaceConfig(**_SURFACE_DEFAULTS["home_feed"])
    related: SurfaceConfig = SurfaceConfig(**_SURFACE_DEFAULTS["related"])
    search: SurfaceConfig = SurfaceConfig(**_SURFACE_DEFAULTS["search"])

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: {**_SURFACE_DEFAULTS[k], **v}
                    if k in _SURFACE_DEFAULTS and isinstance(v, dict) else v
                    for k, v in data.items()}
        return data

    def get(self, name: str) -> SurfaceConfig:
        """The surface called ``name`` (one of :data:`SURFACES`)."""
        if name not in SURFACES:
            raise ConfigError(f"unknown surface; expected one of {list(SURFACES)}", key=name)
        return getattr(self, name)


class SessionConfig(_Strict):
    """How sessions unfold: their length and which surface each request goes to."""

    mean_requests: float = Field(default=3.0, ge=1.0, le=50.0,
                                 description="mean requests per session (1 + geometric)")
    max_requests: int = Field(default=20, ge=1, le=200)
    first_search_share: float = Field(default=0.2, ge=0.0, le=1.0,
                                      description="P(first request is a search), else home")
    related_after_click: float = Field(default=0.6, ge=0.0, le=1.0,
                                       description="P(related) after a slate with a click")
    related_no_click: float = Field(default=0.15, ge=0.0, le=1.0,
                                    description="P(related) after a slate without a click")
    search_share: float = Field(default=0.3, ge=0.0, le=1.0,
                                description="P(search) among later non-related requests")
    mean_gap_seconds: float = Field(default=40.0, gt=0.0, le=86_400.0,
                                    description="mean pause between two requests")
    peak_hour: float = Field(default=20.0, ge=0.0, lt=24.0,
                             description="UTC hour of the daily activity peak")
    diurnal_amplitude: float = Field(default=0.6, ge=0.0, le=1.0)


class PreferenceConfig(_Strict):
    """The TRUE preference model (what users really do), see ``docs/world.md``."""

    latent_dim: int = Field(default=16, ge=2, le=256)
    item_spread: float = Field(default=0.6, ge=0.0, le=5.0,
                               description="std of an item's vector around its topic centre")
    user_spread: float = Field(default=0.3, ge=0.0, le=5.0,
                               description="std of a user's idiosyncratic taste vector")
    affinity_weight: float = Field(default=3.0, ge=0.0, le=20.0)
    quality_weight: float = Field(default=0.6, ge=0.0, le=10.0)
    popularity_weight: float = Field(default=0.3, ge=0.0, le=10.0)
    user_bias_std: float = Field(default=0.5, ge=0.0, le=5.0)
    search_mismatch_penalty: float = Field(default=2.0, ge=0.0, le=20.0)
    related_similarity_weight: float = Field(default=1.0, ge=0.0, le=20.0)
    save_base: float = Field(default=-2.6, ge=-12.0, le=6.0)
    save_quality_weight: float = Field(default=0.8, ge=0.0, le=10.0)
    save_affinity_weight: float = Field(default=1.5, ge=0.0, le=20.0)
    hide_base: float = Field(default=-3.0, ge=-12.0, le=6.0)
    hide_affinity_weight: float = Field(default=2.0, ge=0.0, le=20.0)
    hide_quality_weight: float = Field(default=0.5, ge=0.0, le=10.0)


class LoggingPolicyConfig(_Strict):
    """The production policy that produced the log: Plackett–Luce over a noisy score."""

    pool_size: int = Field(default=200, ge=1, le=5000,
                           description="candidates retrieved per request")
    temperature: float = Field(default=0.5, gt=0.0, le=100.0)
    affinity_weight: float = Field(default=3.0, ge=0.0, le=20.0)
    popularity_weight: float = Field(default=0.5, ge=0.0, le=20.0)
    similarity_weight: float = Field(default=2.0, ge=0.0, le=20.0,
                                     description="weight of seed similarity on related")
    model_noise: float = Field(default=0.35, ge=0.0, le=5.0,
                               description="std of the policy's error in user/item vectors")


class WorldConfig(_Strict):
    """Every parameter of the built-in world. Same config and seed, same bytes."""

    seed: int = Field(default=0, ge=0)
    n_users: int = Field(default=20_000, ge=2)
    n_items: int = Field(default=10_000, ge=2)
    n_impressions: int = Field(default=1_000_000, ge=1,
                               description="the log holds at least this many impressions")
    n_topics: int = Field(default=24, ge=2, le=200)
    n_creators: int = Field(default=1_500, ge=1)
    start: datetime = Field(default=datetime.fromisoformat("2025-01-06T00:00:00+00:00"),
                            strict=False, description="TOML date-time or ISO 8601 text")
    n_days: int = Field(default=28, ge=1, le=3650)
    topic_concentration: float = Field(
        default=0.08, gt=0.0, le=100.0,
        description="Dirichlet concentration of a user's topic mix (small: few topics)")
    topic_prevalence_concentration: float = Field(
        default=3.0, gt=0.0, le=1000.0, description="Dirichlet concentration of topic sizes")
    activity_sigma: float = Field(default=1.2, ge=0.0, le=5.0,
                                  description="lognormal sigma of user activity")
    creator_pareto_shape: float = Field(default=1.2, gt=0.0, le=10.0,
                                        description="Pareto shape of creator size")
    creator_topic_loyalty: float = Field(default=0.8, ge=0.0, le=1.0,
                                         description="P(an item has its creator's topic)")
    popularity_exponent: float = Field(default=0.9, ge=0.0, le=5.0,
                                       description="Zipf exponent of item popularity")
    backfill_share: float = Field(default=0.7, ge=0.0, le=1.0,
                                  description="share of items created before the log starts")
    backfill_days: int = Field(default=365, ge=1, le=36500)
    text_topic_share: float = Field(default=0.55, ge=0.0, le=1.0)
    text_other_topic_share: float = Field(default=0.10, ge=0.0, le=1.0)
    text_mean_words: float = Field(default=5.0, ge=1.0, le=50.0)
    surfaces: SurfacesConfig = Field(default_factory=SurfacesConfig)
    sessions: SessionConfig = Field(default_factory=SessionConfig)
    preferences: PreferenceConfig = Field(default_factory=PreferenceConfig)
    logging_policy: LoggingPolicyConfig = Field(default_factory=LoggingPolicyConfig)

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone (e.g. 2025-01-06T00:00:00Z)")
        if self.text_topic_share + self.text_other_topic_share > 1.0:
            raise ValueError("text_topic_share + text_other_topic_share must be <= 1")
        return self

    def scaled(self, factor: float) -> WorldConfig:
        """The same world with users, items, creators and impressions times ``factor``."""
        if factor <= 0:
            raise ConfigError("scale must be positive", key="scale")
        return self.model_copy(update={
            "n_users": max(2, round(self.n_users * factor)),
            "n_items": max(2, round(self.n_items * factor)),
            "n_creators": max(1, round(self.n_creators * factor)),
            "n_impressions": max(1, round(self.n_impressions * factor)),
        })


def parse_world_config(data: dict[str, Any], *, file: str | None = None) -> WorldConfig:
    """Validate a mapping into a :class:`WorldConfig`; errors name the key and the file."""
    return validate(WorldConfig, data, file=file)


def load_world_config(path: str | Path | None = None, **overrides: Any) -> WorldConfig:
    """Read a TOML file (keys as in :class:`WorldConfig`), apply ``overrides``, validate."""
    data: dict[str, Any] = {}
    file = None
    if path is not None:
        file = str(path)
        data = read_toml(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_world_config(data, file=file)
