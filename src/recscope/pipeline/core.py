"""``Pipeline``: retrievers ► ranker ► re-rankers, with per-stage traces and versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recscope.core.progress import Progress, report
from recscope.data.interactions import Interactions
from recscope.data.rankings import RankedLists
from recscope.models.bandits import BanditSlate, SlotBandit
from recscope.models.base import Component, ComponentSpec, Stage, register
from recscope.models.callbacks import EpochCallback, current_callbacks, training_callbacks
from recscope.models.rerank import Reranker
from recscope.models.union import UnionRetriever, member_names
from recscope.pipeline.config import PipelineConfig, check_config, load_config, ranker_spec
from recscope.pipeline.stack import rank_candidates


@register("pipeline")
class Pipeline(Component):
    """A multi-stage recommender built from a :class:`PipelineConfig`.

    ``recommend(users, k)`` returns ``RankedLists`` whose ``traces`` hold, in order,
    ``retrieval`` (the union's candidates), ``ranking`` (all candidates in ranker order,
    or in fused retriever order without a ranker) and ``rerank.<i>.<component>`` for each
    re-ranker, so the stage funnel can tell where relevant items were lost.
    """

    kind: ClassVar[str] = "pipeline"
    Config = PipelineConfig
    config: PipelineConfig

    def __init__(self, config: PipelineConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        check_config(self.config)
        self.retrieval: UnionRetriever | None = None
        self.ranker: Component | None = None
        self.rerankers: list[Reranker] = []
        self.last_slate: BanditSlate | None = None
        self._progress: Progress | None = None
        self._on_epoch: EpochCallback | None = None

    @classmethod
    def from_toml(cls, path: str | Path) -> Pipeline:
        """Build (unfitted) from a TOML file; errors name the key and the file."""
        return cls(load_config(path))

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Interactions, *, progress: Progress | None = None,
            on_epoch: EpochCallback | None = None) -> Pipeline:
        """Fit every stage on ``train`` (only the configured ``events``, when given).

        ``on_epoch(round, metrics) -> stop?`` goes to the ranker's fit (LambdaMART: after
        every boosting round, when the whole pipeline can already recommend).

        ``progress(stage, done, total)`` reports each stage as it starts and ends
        (``fit ranker lambdamart``, ``fit rerank.0.mmr``...) and reaches the components'
        own training loops; without it, the one set by
        :func:`recscope.models.callbacks.training_callbacks` is used.
        """
        ambient = current_callbacks()
        self._progress = progress if progress is not None else ambient.progress
        self._on_epoch = on_epoch
        if progress is not None:
            with training_callbacks(progress=progress, log_metrics=ambient.log_metrics):
                return self._fit_events(train)
        return self._fit_events(train)

    def _fit_events(self, train: Interactions) -> Pipeline:
        if self.config.events is not None:
            train = train.filter(events=self.config.events)
            if len(train) == 0:
                from recscope.errors import ConfigError

                raise ConfigError(f"no training rows with events {self.config.events}",
                                  key="events")
        super().fit(train)
        return self

    def _union(self) -> UnionRetriever:
        return UnionRetriever({"members": [m.model_dump() for m in self.config.retrievers],
                               "rrf_k": self.config.rrf_k, "seed": self.config.seed})

    def _fit(self, train: Interactions) -> None:
        cfg = self.config
        stages = ([f"ranker {cfg.ranker.component} (with its retrievers)"] if cfg.ranker
                  else [f"retrievers {', '.join(member_names(cfg.retrievers))}"])
        stages += [f"rerank.{i}.{s.component}" for i, s in enumerate(cfg.rerankers)]
        progress = self._progress

        def stage(i: int, done: bool) -> None:
            report(progress, f"fit {stages[i]}", 1.0 if done else 0.0, 1.0)

        stage(0, False)
        if cfg.ranker is not None:
            self.ranker = ranker_spec(cfg).build(key="ranker")
            if self._on_epoch is not None:
                self.rerankers = []
                self.ranker.fit(train, on_epoch=self._serving_hook(self._on_epoch))
            else:
                self.ranker.fit(train)
            self.retrieval = getattr(self.ranker, "retriever", None)
            if self.retrieval is None:
                self.retrieval = self._union().fit(train)
        else:
            self.retrieval = self._union().fit(train)
        stage(0, True)
        self.rerankers = []
        for i, s in enumerate(cfg.rerankers):
            stage(i + 1, False)
            self.rerankers.append(ComponentSpec(component=s.component, params=s.params)
                                  .build(key=f"rerankers.{i}").fit(train))
            stage(i + 1, True)

    def _serving_hook(self, on_epoch: EpochCallback) -> EpochCallback:
        """``on_epoch`` with the pipeline able to recommend inside it: through the ranker's
        retrievers (fitted before its boosting) and without re-rankers (not fitted yet)."""
        def hook(epoch: int, metrics: dict[str, float]) -> bool:
            self.retrieval = getattr(self.ranker, "retriever", None)
            return on_epoch(epoch, metrics)

        return hook

    @property
    def max_k(self) -> int:
        """The longest list :meth:`recommend` can fill: the retrievers' candidates (sum of
        quotas), or fewer when a re-ranker sets a ``depth``."""
        self._check_fitted()
        assert self.retrieval is not None
        depth = self.retrieval.depth
        for spec in self.config.rerankers:
            if spec.depth is not None:
                depth = min(depth, spec.depth)
        return depth

    # ------------------------------------------------------------------ serving
    @property
    def stage_names(self) -> list[str]:
        """Trace names in pipeline order."""
        return (["retrieval", "ranking"]
                + [f"rerank.{i}.{s.component}" for i, s in enumerate(self.config.rerankers)])

    def recommend(self, users: np.ndarray, k: int, *, exclude: Any = "train",
                  batch_size: int = 2048) -> RankedLists:
        """Final top-``k`` with a trace per stage (see the class docstring)."""
        self._check_fitted()
        assert self.retrieval is not None
        users = np.asarray(users, dtype=np.int32)
        depth = self.retrieval.depth
        if self.ranker is not None:
            ranked = self.ranker.recommend(users, depth, exclude=exclude)
            retrieval = ranked.traces.get("retrieval", ranked.items)
        else:
            cand = self.retrieval.candidates(users, exclude=exclude)
            items, sc = rank_candidates(cand.items, self.retrieval.fused(cand), depth)
            ranked = RankedLists(users, items, sc)
            retrieval = cand.items
        traces = {"retrieval": retrieval, "ranking": ranked.items}
        current = RankedLists(users, ranked.items, ranked.scores)
        # every re-ranker once fitted (none while the ranker is still training)
        for i, (spec, stage) in enumerate(zip(self.config.rerankers[:len(self.rerankers)],
                                              self.rerankers, strict=True)):
            current = stage.rerank(current, spec.depth or k)
            if isinstance(stage, SlotBandit):
                self.last_slate = stage.last_slate
            traces[f"rerank.{i}.{spec.component}"] = current.items
        out = current.truncate(k) if current.k >= k else _pad(current, k)
        return RankedLists(users, out.items, out.scores, traces=traces)

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        """Scores of the ranking stage (the ranker, else the retrievers' fusion)."""
        stage = self.ranker if self.ranker is not None else self.retrieval
        assert stage is not None
        return stage._scores(users)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        stage = self.ranker if self.ranker is not None else self.retrieval
        assert stage is not None
        return stage.score(users, items)

    def versions(self) -> dict[str, str]:
        """Version of the pipeline and of every stage (what changed between two runs)."""
        self._check_fitted()
        assert self.retrieval is not None
        out = {"pipeline": self.version}
        for name, member in zip(self.retrieval.names, self.retrieval.members, strict=True):
            out[f"retriever.{name}"] = member.version
        if self.ranker is not None:
            out[f"ranker.{self.ranker.name}"] = self.ranker.version
        for i, stage in enumerate(self.rerankers):
            out[f"rerank.{i}.{stage.name}"] = stage.version
        return out

    # ------------------------------------------------------------------ persistence
    def _save_extra(self, directory: Path) -> None:
        from recscope.io import write_json

        assert self.retrieval is not None
        if self.ranker is not None:
            self.ranker.save(directory / "stages" / "ranker")
        else:
            self.retrieval.save(directory / "stages" / "retrieval")
        for i, stage in enumerate(self.rerankers):
            stage.save(directory / "stages" / f"rerank-{i:02d}")
        write_json(directory / "versions.json", self.versions())

    def _load_extra(self, directory: Path) -> None:
        if self.config.ranker is not None:
            self.ranker = Component.load(directory / "stages" / "ranker")
            self.retrieval = getattr(self.ranker, "retriever", None)
        else:
            self.retrieval = Component.load(directory / "stages" / "retrieval")
        self.rerankers = [Stage.load(directory / "stages" / f"rerank-{i:02d}")
                          for i in range(len(self.config.rerankers))]


def _pad(lists: RankedLists, k: int) -> RankedLists:
    n, have = lists.items.shape
    items = np.full((n, k), -1, dtype=np.int32)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    items[:, :have], scores[:, :have] = lists.items, lists.scores
    return RankedLists(lists.users, items, scores)
