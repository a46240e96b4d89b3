"""Pipeline configuration: a TOML file of retrievers, an optional ranker and re-rankers.

```toml
name = "ml100k"
events = ["rating"]         # optional: train on these events only

[[retrievers]]              # candidate generators, in priority order
component = "ease"
quota = 100                 # distinct candidates this retriever contributes
params = { l2 = 500.0 }

[ranker]                    # optional; trained on the retrievers' candidates
component = "lambdamart"
params = { n_estimators = 300 }

[[rerankers]]               # optional, applied in order
component = "mmr"
params = { lambda_ = 0.8 }
```

A single model is a smaller file that ``recscope train`` also reads (:class:`ModelConfig`;
the model's own scores are served, no fusion)::

    name = "ml100k-ease"
    component = "ease"
    params = { l2 = 500.0 }

Every problem (bad TOML, an unknown component, a missing or mistyped parameter, a
component in the wrong section) raises :class:`recscope.errors.ConfigError` naming the
key (``retrievers.0.params.l2``) and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from recscope.config import StrictModel, validate
from recscope.errors import ConfigError
from recscope.io import read_toml
from recscope.models.base import ComponentConfig, ComponentSpec, get_component
from recscope.models.union import UnionMember, member_names


class RerankSpec(ComponentSpec):
    """A re-ranking stage; ``depth``: how many items it outputs (default: the final k)."""

    depth: int | None = Field(default=None, ge=1)


class PipelineConfig(ComponentConfig):
    """The whole pipeline (see the module docstring); strict like every config."""

    name: str = "pipeline"
    events: list[str] | None = None
    retrievers: list[UnionMember] = Field(min_length=1)
    ranker: ComponentSpec | None = None
    rerankers: list[RerankSpec] = Field(default_factory=list)
    rrf_k: float = Field(default=60.0, gt=0)


def _kind_of(component: str, key: str, file: str | None) -> str:
    return get_component(component, file=file, key=key).kind


def check_config(cfg: PipelineConfig, *, file: str | None = None) -> None:
    """Resolve every component and validate its parameters (no fitting)."""
    names = member_names(cfg.retrievers)
    if len(set(names)) != len(names):
        raise ConfigError(f"retriever names must be unique, got {names}; set name = ...",
                          key="retrievers", file=file)
    for i, spec in enumerate(cfg.retrievers):
        key = f"retrievers.{i}"
        if _kind_of(spec.component, f"{key}.component", file) != "retriever":
            raise ConfigError(f"{spec.component!r} is not a retriever", key=f"{key}.component",
                              file=file)
        spec.build(file=file, key=key)
    if cfg.ranker is not None:
        if _kind_of(cfg.ranker.component, "ranker.component", file) != "ranker":
            raise ConfigError(f"{cfg.ranker.component!r} is not a ranker",
                              key="ranker.component", file=file)
        if "members" in cfg.ranker.params:
            raise ConfigError("the ranker's candidates come from [[retrievers]]; remove "
                              "members here", key="ranker.params.members", file=file)
        ranker_spec(cfg).build(file=file, key="ranker")
    for i, spec in enumerate(cfg.rerankers):
        key = f"rerankers.{i}"
        if _kind_of(spec.component, f"{key}.component", file) not in ("reranker", "bandit"):
            raise ConfigError(f"{spec.component!r} is not a re-ranker or bandit",
                              key=f"{key}.component", file=file)
        ComponentSpec(component=spec.component, params=spec.params).build(file=file, key=key)


def ranker_spec(cfg: PipelineConfig) -> ComponentSpec:
    """The ranker's spec with the pipeline's retrievers as its candidate members."""
    assert cfg.ranker is not None
    members = [m.model_dump() for m in cfg.retrievers]
    return ComponentSpec(component=cfg.ranker.component,
                         params={**cfg.ranker.params, "members": members})


def parse_config(data: dict[str, Any], *, file: str | None = None) -> PipelineConfig:
    """Validate a config mapping (as read from TOML)."""
    cfg = validate(PipelineConfig, data, file=file)
    check_config(cfg, file=file)
    return cfg


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline TOML file."""
    return parse_config(read_toml(path), file=str(Path(path)))


class ModelConfig(StrictModel):
    """One model trained on its own (see the module docstring)."""

    name: str | None = None
    component: str
    params: dict[str, Any] = Field(default_factory=dict)
    events: list[str] | None = None

    def build(self, *, file: str | None = None) -> Any:
        """The unfitted component (parameters validated; errors name ``params.<key>``)."""
        return ComponentSpec(component=self.component, params=self.params).build(file=file)

    @property
    def display_name(self) -> str:
        return self.name or self.component


def load_train_config(path: str | Path) -> PipelineConfig | ModelConfig:
    """What ``recscope train`` reads: a pipeline TOML (``[[retrievers]]``) or a single
    model (a top-level ``component``)."""
    file = str(Path(path))
    data = read_toml(path)
    if "component" in data and "retrievers" not in data:
        cfg = validate(ModelConfig, data, file=file)
        cfg.build(file=file)  # resolve the component and validate its parameters now
        return cfg
    return parse_config(data, file=file)


__all__ = ["ModelConfig", "PipelineConfig", "RerankSpec", "check_config", "load_config",
           "load_train_config", "parse_config", "ranker_spec"]

