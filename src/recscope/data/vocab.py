"""Id vocabularies: external ids to dense int32 indices and back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from recscope.errors import DataValidationError


class Vocabulary:
    """An ordered set of external ids; index ``i`` is the ``i``-th id.

    Built once from data (ids sorted, so the mapping does not depend on row order) and
    shared by every table derived from the same source (splits keep their parent's
    vocabulary), so indices mean the same thing everywhere downstream.
    """

    def __init__(self, ids: pa.Array | Sequence[object] | np.ndarray, *, name: str = "id") -> None:
        arr = ids if isinstance(ids, pa.Array) else pa.array(ids)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        self.name = name
        self._ids = arr
        self._index = pd.Index(arr.to_pandas())
        if not self._index.is_unique:
            raise DataValidationError("vocabulary ids are not unique", column=name)

    @classmethod
    def from_values(cls, values: pa.Array | pa.ChunkedArray, *, name: str = "id") -> Vocabulary:
        """Vocabulary of the distinct values, sorted."""
        import pyarrow.compute as pc

        uniq = pc.unique(values)
        if isinstance(uniq, pa.ChunkedArray):
            uniq = uniq.combine_chunks()
        return cls(pc.take(uniq, pc.sort_indices(uniq)), name=name)

    def __len__(self) -> int:
        return len(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._ids.equals(other._ids)

    def __hash__(self) -> int:  # pragma: no cover - vocabularies are not dict keys
        return id(self)

    @property
    def ids(self) -> pa.Array:
        """External ids in index order."""
        return self._ids

    def index(self, ids: pa.Array | pa.ChunkedArray | Sequence[object] | np.ndarray, *,
              missing: Literal["error", "ignore"] = "error") -> np.ndarray:
        """Dense int32 indices of ``ids``; unknown ids raise, or map to -1 with ``ignore``."""
        if isinstance(ids, pa.ChunkedArray | pa.Array):
            values = ids.to_pandas()
        else:
            values = pd.Index(ids) if not isinstance(ids, np.ndarray) else ids
        idx = self._index.get_indexer(values).astype(np.int32)
        if missing == "error" and (idx < 0).any():
            row = int(np.flatnonzero(idx < 0)[0])
            bad = values.iloc[row] if isinstance(values, pd.Series) else values[row]
            raise DataValidationError(f"unknown id {bad!r} (not in the vocabulary)",
                                      column=self.name, row=row)
        return idx

    def lookup(self, indices: np.ndarray | Sequence[int]) -> pa.Array:
        """External ids of dense indices (-1 gives null)."""
        idx = np.asarray(indices, dtype=np.int64)
        mask = idx < 0
        taken = self._ids.take(pa.array(np.where(mask, 0, idx)))
        if mask.any():
            import pyarrow.compute as pc

            taken = pc.if_else(pa.array(mask), pa.nulls(len(idx), taken.type), taken)
        return taken
