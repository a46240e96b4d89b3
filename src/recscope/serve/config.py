"""Configuration of ``recscope serve``: the service settings and the experiment file.

An experiment file (TOML, ``--experiment``) names the arms and how units are split; each
arm serves its own model (default: the ``--model`` of the command line)::

    name = "new-ranker"            # experiment name; the assignment salt defaults to it
    surfaces = ["home_feed", "related", "search"]
    max_k = 100

    [arms.control]                 # 'control' is required and comes first
    [arms.treatment]
    model = "models/candidate"     # a model directory (or a registry URI, see models.py)
    weight = 1.0                   # allocation weight (default equal)
    exploration = 0.1              # ε-greedy slates: logged with their propensity

Assignment is :func:`recscope.experiments.assignment.assign` with the experiment's salt,
layer, traffic range and holdout, the same function the simulator and the analysis use,
so a unit gets the same arm everywhere.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from recscope.config import StrictModel, load
from recscope.errors import ConfigError
from recscope.experiments.assignment import Experiment, Holdout

#: Surfaces a service answers when the experiment file does not list its own.
DEFAULT_SURFACES: tuple[str, ...] = ("home_feed", "related", "search")


class ArmConfig(StrictModel):
    """One arm: the model it serves, its allocation weight and its exploration."""

    model: str | None = Field(default=None, description="model directory or registry URI; "
                              "default: the service's --model")
    weight: float = Field(default=1.0, ge=0.0)
    exploration: float = Field(default=0.0, ge=0.0, le=1.0,
                               description="ε of ε-greedy slates (0: deterministic)")
    pool: int = Field(default=50, ge=1, le=10_000,
                      description="top-scored items an exploring slate is drawn from")


class ExperimentConfig(StrictModel):
    """The experiment a service runs (see the module docstring)."""

    name: str = Field(min_length=1)
    salt: str | None = None
    layer: str = "default"
    traffic: tuple[float, float] = (0.0, 1.0)
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    holdout_salt: str = "global"
    enabled: bool = True
    surfaces: list[str] = Field(default_factory=lambda: list(DEFAULT_SURFACES), min_length=1)
    max_k: int = Field(default=100, ge=1, le=10_000)
    arms: dict[str, ArmConfig]

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if "control" not in self.arms:
            raise ValueError("one arm must be called 'control'")
        if len(self.arms) < 2:
            raise ValueError("an experiment needs at least two arms")
        if sum(a.weight for a in self.arms.values()) <= 0:
            raise ValueError("arm weights must not all be 0")
        if len(set(self.surfaces)) != len(self.surfaces):
            raise ValueError("surfaces must be distinct")
        self.assignment()  # traffic, holdout and names are checked by Experiment
        return self

    @property
    def arm_names(self) -> list[str]:
        """Arm names, control first (the order of the assignment's cumulative weights)."""
        return ["control", *[a for a in self.arms if a != "control"]]

    def assignment(self) -> Experiment:
        """The :class:`~recscope.experiments.assignment.Experiment` that places units."""
        names = self.arm_names
        return Experiment(name=self.name, variants=tuple(names),
                          weights=[self.arms[a].weight for a in names], layer=self.layer,
                          traffic=(float(self.traffic[0]), float(self.traffic[1])),
                          salt=self.salt,
                          holdout=Holdout(self.holdout, salt=self.holdout_salt)
                          if self.holdout > 0 else None)

    def describe(self) -> dict[str, object]:
        """What a client needs to reproduce the assignment (served on ``GET /experiment``)."""
        e = self.assignment()
        return {"name": self.name, "salt": e.experiment_salt, "layer": self.layer,
                "traffic": list(e.traffic), "holdout": self.holdout,
                "holdout_salt": self.holdout_salt, "arms": self.arm_names,
                "weights": [self.arms[a].weight for a in self.arm_names],
                "enabled": self.enabled, "surfaces": list(self.surfaces), "max_k": self.max_k}


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """Read an experiment file; relative model paths are relative to the file."""
    p = Path(path)
    cfg = load(ExperimentConfig, p, "experiment")
    base = p.resolve().parent
    arms = {}
    for name, arm in cfg.arms.items():
        model = arm.model
        if model is not None and "://" not in model and ":/" not in model \
                and not Path(model).is_absolute():
            model = str(base / model)
        arms[name] = arm.model_copy(update={"model": model})
    return cfg.model_copy(update={"arms": arms})


def single_arm(surfaces: list[str] | None = None, max_k: int = 100) -> ExperimentConfig:
    """The configuration of a service without an experiment: everyone gets ``--model``."""
    if max_k < 1:
        raise ConfigError("max_k must be at least 1", key="max_k")
    cfg = ExperimentConfig.model_construct(
        name="", salt=None, layer="default", traffic=(0.0, 1.0), holdout=0.0,
        holdout_salt="global", enabled=False,
        surfaces=list(surfaces or DEFAULT_SURFACES), max_k=max_k,
        arms={"control": ArmConfig()})
    return cfg
