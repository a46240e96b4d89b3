"""Item side information as dense codes (topics, creators) and cheap item embeddings."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recscope.data.interactions import Interactions
from recscope.errors import ConfigError


def item_codes(train: Interactions, column: str, *, required: bool = False
               ) -> tuple[np.ndarray, list[str]]:
    """Code of every item's ``column`` value in the item side table (−1 unknown) and the
    code → value names. Missing side table or column gives all −1 (or raises if
    ``required``)."""
    feats = train.item_features
    out = np.full(train.n_items, -1, dtype=np.int64)
    if feats is None or column not in feats.column_names:
        if required:
            raise ConfigError(f"the item side table has no {column!r} column", key=column)
        return out, []
    idx = train.items.index(feats.column("item_id"), missing="ignore")
    values = np.asarray([None if v is None else str(v) for v in feats.column(column).to_pylist()],
                        dtype=object)
    ok = (idx >= 0) & np.array([v is not None for v in values], dtype=bool)
    names, codes = np.unique(values[ok].astype(str), return_inverse=True)
    out[idx[ok]] = codes
    return out, [str(n) for n in names]


def svd_item_embeddings(train: Interactions, dim: int, seed: int) -> np.ndarray:
    """Unit-norm item vectors [n_items, d] from a truncated SVD of the (row-normalised)
    user × item matrix: items consumed by the same users point the same way."""
    from sklearn.decomposition import TruncatedSVD

    x = train.to_csr("binary")
    norms = np.sqrt(np.asarray(x.sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norms, 1.0)) @ x
    d = max(1, min(dim, min(x.shape) - 1))
    svd = TruncatedSVD(n_components=d, random_state=seed, algorithm="arpack")
    v = svd.fit(x).components_.T.astype(np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(n > 0, v / np.maximum(n, 1e-12), 0.0).astype(np.float32)
