"""Multi-stage pipelines from a TOML config: retrievers ► ranker ► re-rankers, with
per-stage traces and component versions (see :mod:`recscope.pipeline.config`).

Importing the package registers :class:`Pipeline` as the component ``pipeline`` with the
models registry (models never import this layer; a saved pipeline records its module so
``Component.load`` finds it)."""

from recscope.pipeline.config import (
    ModelConfig,
    PipelineConfig,
    RerankSpec,
    load_config,
    load_train_config,
    parse_config,
)
from recscope.pipeline.core import Pipeline
from recscope.pipeline.stack import RetrieveRank, rank_candidates

__all__ = ["ModelConfig", "Pipeline", "PipelineConfig", "RerankSpec", "RetrieveRank",
           "load_config", "load_train_config", "parse_config", "rank_candidates"]
