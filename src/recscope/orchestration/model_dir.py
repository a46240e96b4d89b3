"""The saved form of a trained pipeline that tuning, workflows and the registry share.

A model directory holds ``pipeline/`` (the saved components), ``users.parquet`` and
``items.parquet`` (the external id vocabularies) and ``train.json`` (name, data
fingerprint, config, versions, timings): the layout ``recscope train`` writes and
``recscope recommend`` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recscope.data.interactions import Interactions
from recscope.errors import DataValidationError
from recscope.io import atomic_dir, write_json
from recscope.models.base import Component

REQUIRED = ("pipeline", "users.parquet", "items.parquet", "train.json")


def save_model_dir(path: str | Path, pipe: Component, train: Interactions,
                   info: dict[str, Any], *, force: bool = True) -> Path:
    """Write ``pipe`` (fitted on ``train``) and its vocabularies atomically to ``path``."""
    doc = {"name": getattr(pipe.config, "name", pipe.name),
           "data_fingerprint": train.fingerprint(), "n_users": train.n_users,
           "n_items": train.n_items, "n_interactions": len(train),
           "config": pipe.config.model_dump(mode="json"), "version": pipe.version,
           **info}
    versions = getattr(pipe, "versions", None)
    if callable(versions):
        doc["versions"] = versions()
    with atomic_dir(path, force=force) as tmp:
        pipe.save(tmp / "pipeline")
        pq.write_table(pa.table({"user_id": train.users.ids}), tmp / "users.parquet")
        pq.write_table(pa.table({"item_id": train.items.ids}), tmp / "items.parquet")
        write_json(tmp / "train.json", doc)
    return Path(path)


@dataclass
class ModelDir:
    """A loaded model directory: the component, its vocabularies and ``train.json``."""

    path: Path
    model: Component
    user_ids: pa.Array
    item_ids: pa.Array
    info: dict[str, Any]


def read_info(path: str | Path) -> dict[str, Any]:
    """``train.json`` of a model directory (checks that it is one)."""
    p = Path(path)
    if not p.is_dir():
        raise DataValidationError("not a model directory (no such folder)", file=str(p))
    for name in REQUIRED:
        if not (p / name).exists():
            raise DataValidationError(f"not a model directory: {name} missing", file=str(p))
    try:
        return json.loads((p / "train.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataValidationError(f"unreadable train.json: {exc}",
                                  file=str(p / "train.json")) from None


def load_model_dir(path: str | Path) -> ModelDir:
    """Load a model directory written by :func:`save_model_dir` or ``recscope train``."""
    p = Path(path)
    info = read_info(p)
    users = pq.read_table(p / "users.parquet").column("user_id").combine_chunks()
    items = pq.read_table(p / "items.parquet").column("item_id").combine_chunks()
    return ModelDir(p, Component.load(p / "pipeline"), users, items, info)


def model_fingerprint(path: str | Path) -> str:
    """Content hash of every file of a model directory (name order), for lineage."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file() and
                    not x.name.startswith(".recscope-manifest")):
        h.update(str(f.relative_to(p)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


__all__ = ["ModelDir", "load_model_dir", "model_fingerprint", "read_info", "save_model_dir"]
