"""``launch.toml``: launch criteria as code (a strict pydantic model).

::

    name = "new-ranker"            # what is being decided
    team = "ranking"               # for the portfolio view
    components = ["ranker"]        # what the change touches
    variant = "treatment"          # the arm to decide on (optional with one treatment)
    alpha = 0.05                   # one-sided level of every test, before correction
    correction = "bonferroni"      # within the primaries and within the guardrails
    require = "all"                # every primary must win ("any": one is enough)
    tree = "saves"                 # optional: a metric tree of the metrics TOML to show

    [primary.saves]                # a metric of the experiment
    direction = "increase"         # the good direction
    min_effect = 0.01              # minimum practical effect (relative, 0.01 = +1%)

    [guardrails.hides]
    direction = "decrease"         # the good direction; harm is a move the other way
    margin = 0.02                  # non-inferiority margin (relative, required)

    [gates.offline]                # optional; needs --offline
    metric = "ndcg@10"
    system = "candidate"           # for a paired comparison file
    threshold = 0.0                # the interval's lower bound must exceed it

    [gates.ope]                    # optional; needs --ope
    estimator = "dr"
    min_lift = 0.0                 # lower bound / logging policy's value - 1 must exceed it

    [gates.long_run]               # optional; needs --long-run
    metric = "saves"
    threshold = 0.0                # relative long-run effect's lower bound must exceed it
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from recscope.config import StrictModel, load
from recscope.errors import ConfigError

Direction = Literal["increase", "decrease"]
Outcome = Literal["iterate", "stop"]


class _Frozen(StrictModel):
    model_config = ConfigDict(frozen=True)


class Primary(_Frozen):
    """A primary metric: it must improve by a significant and practical amount."""

    direction: Direction = "increase"
    min_effect: float = Field(default=0.0, ge=0.0)


class Guardrail(_Frozen):
    """A guardrail: it must not get worse by ``margin`` or more (non-inferiority)."""

    direction: Direction
    margin: float = Field(gt=0.0)


class OfflineGate(_Frozen):
    """The offline benchmark: metric (and system of a comparison) whose interval's lower
    bound must exceed ``threshold``."""

    metric: str
    system: str | None = None
    threshold: float = 0.0
    on_fail: Outcome = "iterate"


class OPEGate(_Frozen):
    """The off-policy estimate of ``estimator``: its lower bound must exceed ``threshold``
    or, with ``min_lift``, the logging policy's value times ``1 + min_lift``."""

    estimator: str
    threshold: float | None = None
    min_lift: float | None = None
    on_fail: Outcome = "iterate"

    @model_validator(mode="after")
    def _one(self) -> OPEGate:
        if (self.threshold is None) == (self.min_lift is None):
            raise ValueError("give exactly one of threshold or min_lift")
        return self


class LongRunGate(_Frozen):
    """The long-run projection of ``metric``: its relative lower bound must exceed
    ``threshold``."""

    metric: str
    threshold: float = 0.0
    on_fail: Outcome = "iterate"


class Gates(_Frozen):
    offline: OfflineGate | None = None
    ope: OPEGate | None = None
    long_run: LongRunGate | None = None


class LaunchConfig(_Frozen):
    """A launch's criteria: see the module docstring for each key."""

    name: str
    team: str = ""
    components: list[str] = Field(default_factory=list)
    variant: str | None = None
    alpha: float = 0.05
    correction: Literal["bonferroni", "none"] = "bonferroni"
    require: Literal["all", "any"] = "all"
    tree: str | None = None
    primary: dict[str, Primary]
    guardrails: dict[str, Guardrail] = Field(default_factory=dict)
    gates: Gates = Gates()
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> LaunchConfig:
        if not 0 < self.alpha < 0.5 or not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not self.primary:
            raise ValueError("define at least one [primary.METRIC] table")
        both = sorted(set(self.primary) & set(self.guardrails))
        if both:
            raise ValueError(f"metric {both[0]!r} is both primary and guardrail")
        return self

    def alpha_primary(self) -> float:
        """Level of each primary's one-sided test after correction."""
        m = len(self.primary) if self.correction == "bonferroni" else 1
        return self.alpha / m

    def alpha_guardrail(self) -> float:
        """Level of each guardrail's one-sided non-inferiority test after correction."""
        m = max(len(self.guardrails), 1) if self.correction == "bonferroni" else 1
        return self.alpha / m

    def metrics(self) -> list[str]:
        return [*self.primary, *self.guardrails]

    def check_metrics(self, available: list[str], what: str) -> None:
        """Every metric the file names exists in ``available`` (of ``what``)."""
        for table in ("primary", "guardrails"):
            for m in getattr(self, table):
                if m not in available:
                    raise ConfigError(f"metric {m!r} is not in the {what} (has: "
                                      f"{', '.join(available) or 'none'})",
                                      key=f"{table}.{m}", file=self.source)


def load_launch(path: str | Path) -> LaunchConfig:
    """Read and validate a launch TOML (errors name the file and the key)."""
    cfg = load(LaunchConfig, path, "launch")
    if cfg.source is not None:
        raise ConfigError("unknown key", key="source", file=str(path))
    return cfg.model_copy(update={"source": str(path)})
