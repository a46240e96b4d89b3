"""Search spaces declared in a pipeline TOML next to the values they replace.

A tunable value is an inline table with a ``tune`` key instead of a plain value::

    [[retrievers]]
    component = "als"
    params = { factors = {tune = "int", low = 16, high = 128, log = true},
               regularization = {tune = "float", low = 1e-4, high = 1.0, log = true},
               iterations = 30 }

Kinds: ``int`` and ``float`` (``low``, ``high``, optional ``log`` and ``step``) and
``categorical`` (``choices``). ``default`` (optional) is the value the untuned baseline
uses; without it the key is left out, so the component's own default applies.

:func:`extract` takes the specs out of the parsed TOML BEFORE the pipeline config is
validated (a spec is not a valid parameter value), checks every spec, and then checks the
pipeline at the low and high ends of every range, so an unknown hyper-parameter name or a
range the component rejects fails at once, naming the file and the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from recscope.config import StrictModel, config_error
from recscope.errors import ConfigError
from recscope.io import read_toml
from recscope.pipeline.config import PipelineConfig, parse_config

Key = tuple[str | int, ...]
Value = bool | int | float | str


class ParamSpec(StrictModel):
    """One tunable value (see the module docstring)."""

    tune: Literal["int", "float", "categorical"]
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(default=None, gt=0)
    choices: list[Value] | None = None
    default: Value | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.tune == "categorical":
            if not self.choices:
                raise ValueError("a categorical search space needs a non-empty 'choices'")
            if self.low is not None or self.high is not None:
                raise ValueError("a categorical search space takes 'choices', not low/high")
            return self
        if self.choices is not None:
            raise ValueError(f"an {self.tune} search space takes low/high, not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.tune} search space needs 'low' and 'high'")
        if self.tune == "int" and not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise ValueError("an int search space needs integer low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log search space needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be combined")
        return self

    def ends(self) -> list[Value]:
        """The values the pipeline config is checked at (both ends, or every choice)."""
        if self.tune == "categorical":
            assert self.choices is not None
            return list(self.choices)
        assert self.low is not None and self.high is not None
        cast = int if self.tune == "int" else float
        return [cast(self.low), cast(self.high)]


@dataclass(frozen=True)
class Param:
    """A tunable value at ``path`` in the pipeline mapping (``name`` is its dotted key)."""

    path: Key
    spec: ParamSpec

    @property
    def name(self) -> str:
        return ".".join(str(p) for p in self.path)

    def suggest(self, trial: Any) -> Value:
        """Draw this value from an Optuna ``trial``."""
        s = self.spec
        if s.tune == "categorical":
            assert s.choices is not None
            return trial.suggest_categorical(self.name, s.choices)
        if s.tune == "int":
            return trial.suggest_int(self.name, int(s.low or 0), int(s.high or 0),
                                     step=int(s.step or 1), log=s.log)
        return trial.suggest_float(self.name, float(s.low or 0), float(s.high or 0),
                                   step=None if s.step is None else float(s.step), log=s.log)


@dataclass(frozen=True)
class SearchSpace:
    """The pipeline mapping without its specs (``base``) and the tunable values."""

    base: dict[str, Any]
    params: tuple[Param, ...]
    file: str | None = None

    def config(self, values: dict[str, Value] | None = None) -> PipelineConfig:
        """The pipeline config with ``values`` (by dotted name) filled in; a value not given
        takes the spec's ``default`` (or the component's default when it has none)."""
        values = values or {}
        data = copy.deepcopy(self.base)
        for p in self.params:
            if p.name in values:
                _set(data, p.path, values[p.name])
            elif p.spec.default is not None:
                _set(data, p.path, p.spec.default)
        return parse_config(data, file=self.file)

    def default_config(self) -> PipelineConfig:
        """The untuned baseline: every spec replaced by its default."""
        return self.config({})

    def fingerprint(self) -> str:
        """Hash of the base mapping and the specs (names a study: same space, same study)."""
        doc = {"base": self.base,
               "params": {p.name: p.spec.model_dump(mode="json") for p in self.params}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()
                              ).hexdigest()[:12]


def _set(data: Any, path: Key, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _walk(node: Any, path: Key, found: list[tuple[Key, Any]]) -> Any:
    """A copy of ``node`` with specs removed; specs go to ``found``."""
    if isinstance(node, dict):
        if "tune" in node:
            found.append((path, node))
            return _REMOVED
        out = {}
        for k, v in node.items():
            w = _walk(v, (*path, k), found)
            if w is not _REMOVED:
                out[k] = w
        return out
    if isinstance(node, list):
        return [_walk(v, (*path, i), found) for i, v in enumerate(node)]
    return node


_REMOVED = object()


def extract(data: dict[str, Any], *, file: str | None = None) -> SearchSpace:
    """Take the search-space specs out of a parsed pipeline mapping and check them (see the
    module docstring); every problem is a ConfigError naming the key and the file."""
    found: list[tuple[Key, Any]] = []
    base = _walk(data, (), found)
    params: list[Param] = []
    for path, raw in found:
        key = ".".join(str(p) for p in path)
        if len(path) < 2 or path[-2] != "params":
            raise ConfigError("only component parameters (params.<name>) can be tuned",
                              key=key, file=file)
        try:
            spec = ParamSpec.model_validate(raw)
        except ValidationError as exc:
            raise config_error(exc, file=file, prefix=key) from None
        params.append(Param(path, spec))
    space = SearchSpace(base, tuple(params), file)
    # the baseline, then each end of every range, must make a valid pipeline: this names an
    # unknown hyper-parameter or a range the component itself rejects (e.g. factors >= 1)
    space.default_config()
    for p in params:
        for value in p.spec.ends():
            space.config({p.name: value})
        if p.spec.default is not None and p.spec.tune != "categorical":
            lo, hi = p.spec.ends()
            if not (lo <= p.spec.default <= hi):  # type: ignore[operator]
                raise ConfigError(f"default {p.spec.default!r} is outside [{lo}, {hi}]",
                                  key=f"{p.name}.default", file=file)
    return space


def load_space(path: str | Path) -> SearchSpace:
    """Read a pipeline TOML with search-space specs (see :func:`extract`)."""
    return extract(read_toml(path), file=str(Path(path)))


__all__ = ["Param", "ParamSpec", "SearchSpace", "extract", "load_space"]
