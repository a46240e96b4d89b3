"""One config system: strict pydantic models and one way to turn their errors into
:class:`~recscope.errors.ConfigError` naming the file and the key.

Every TOML file recscope reads (pipelines, experiment metrics, simulator experiments, ...)
is a :class:`StrictModel`: unknown keys are errors and values are not coerced across
types (``sequential = "no"`` is not ``True``, ``alpha = "0.01"`` is not a number).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from recscope.errors import ConfigError
from recscope.io import read_toml

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, no coercion across types."""

    model_config = ConfigDict(extra="forbid", strict=True)


def config_error(exc: ValidationError, *, file: str | os.PathLike[str] | None = None,
                 prefix: str = "") -> ConfigError:
    """The first problem of a pydantic ``ValidationError`` as a ConfigError naming the key
    (dotted path, prefixed with ``prefix``) and the file."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    key = ".".join(p for p in (prefix, loc) if p) or None
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and err.get("type") not in ("missing",):
        value = err["input"]
        if not isinstance(value, Mapping | list):
            msg = f"{msg} (got {value!r})"
    return ConfigError(msg, key=key, file=None if file is None else str(file))


def validate(model: type[M], data: Any, *, file: str | os.PathLike[str] | None = None,
             prefix: str = "") -> M:
    """``model.model_validate(data)`` with errors as :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, file=file, prefix=prefix) from None


def load(model: type[M], path: str | os.PathLike[str], what: str = "config") -> M:
    """Read a TOML file into ``model``; every problem names the file (and the key)."""
    return validate(model, read_toml(Path(path), what), file=path)
