"""Multi-stage pipelines from a TOML config: retrievers ► ranker ► re-rankers, with
per-stage traces and component versions (see :mod:`recscope.pipeline.config`)."""

from recscope.pipeline.config import PipelineConfig, RerankSpec, load_config, parse_config
from recscope.pipeline.core import Pipeline

__all__ = ["Pipeline", "PipelineConfig", "RerankSpec", "load_config", "parse_config"]
