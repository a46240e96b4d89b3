"""Stacks of an experiment's cells from their specs: built-in parts, named policies,
fitted recscope components and recscope pipelines (shared between cells)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recscope.errors import ConfigError
from recscope.sim.experiment_config import NAMED_POLICIES
from recscope.sim.stacks import (
    RANKERS,
    RETRIEVERS,
    ComponentRanker,
    ComponentRetriever,
    StackPolicy,
    WorldIndex,
)
from recscope.sim.world_model import WorldTruth


class PolicyFactory:
    """Builds stack policies from specs, sharing components between cells."""

    def __init__(self, truth: WorldTruth, seed: int = 0,
                 parts: dict[tuple[str, str], Any] | None = None,
                 train_data: Callable[[], Any] | None = None) -> None:
        self.truth = truth
        self.seed = seed
        self.index = WorldIndex(truth, seed=seed)
        self._parts: dict[tuple[str, str], Any] = dict(parts or {})
        self._train_data = train_data
        self._train: Any = None
        self._pipelines: dict[str, Any] = {}

    def pipeline(self, path: str) -> Any:
        """A recscope :class:`~recscope.pipeline.Pipeline` from its TOML file, fitted on
        the clicks and saves of the world's log (once per file)."""
        if path not in self._pipelines:
            from recscope.pipeline import Pipeline

            if self._train_data is None:
                raise ConfigError("pipeline variants need the world's log to train on",
                                  key="pipeline")
            if self._train is None:
                self._train = self._train_data()
            self._pipelines[path] = Pipeline.from_toml(path).fit(self._train)
        return self._pipelines[path]

    def part(self, kind: str, name: str) -> Any:
        """The retriever or ranker called ``name``: one given to the factory (for
        example a fitted recscope component), else a built-in one."""
        if (kind, name) in self._parts:
            return self._parts[(kind, name)]
        table = RETRIEVERS if kind == "retriever" else RANKERS
        if name not in table:
            raise ConfigError(f"unknown built-in {kind} {name!r}; expected one of "
                              f"{sorted(table)}", key=kind)
        self._parts[(kind, name)] = table[name](self.truth, self.seed)
        return self._parts[(kind, name)]

    def stack(self, spec: dict[str, Any], name: str) -> StackPolicy:
        """The stack of a variant: built-in or given parts, a named policy, or a recscope
        pipeline (``pipeline = "file.toml"``: its ranked lists are the candidates and its
        scores order them, with Plackett–Luce noise of ``temperature``)."""
        s = dict(spec)
        if "pipeline" in s:
            pipe = self.pipeline(str(s["pipeline"]))
            return StackPolicy(self.truth, ComponentRetriever(pipe, self.truth.n_users),
                               ComponentRanker(pipe), pool=int(s.get("pool", 100)),
                               temperature=float(s.get("temperature", 0.3)),
                               index=self.index, seed=self.seed, name=name)
        if "policy" in s:
            named = s.pop("policy")
            if named not in NAMED_POLICIES:
                raise ConfigError(f"unknown named policy {named!r}; expected one of "
                                  f"{sorted(NAMED_POLICIES)}", key="policy")
            s = {**NAMED_POLICIES[named], **s}
        return StackPolicy(self.truth, self.part("retriever", s.get("retriever", "popular")),
                           self.part("ranker", s.get("ranker", "affinity")),
                           pool=int(s.get("pool", 100)),
                           temperature=float(s.get("temperature", 0.3)), index=self.index,
                           seed=self.seed, name=name)
