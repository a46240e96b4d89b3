"""Text encoders: hashing fallback, the packaged sentence model, the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recscope.data.vocab import Vocabulary
from recscope.errors import ConfigError, DataValidationError
from recscope.models.neural import TextEncoder, item_texts, sentence_model_path

TEXTS = ["chocolate cake recipe with frosting", "easy chocolate cake for birthdays",
         "hiking trail in the mountains", "mountain hiking boots and trail maps", ""]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_hashing_encoder_is_normalised_deterministic_and_semantic(tmp_path: Path) -> None:
    enc = TextEncoder("hashing", dim=3, cache_dir=None)
    v = enc.encode(TEXTS)
    assert v.shape == (5, 3) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:4], axis=1), 1.0, rtol=1e-5)
    assert not v[4].any(), "empty text must give a zero vector"
    np.testing.assert_array_equal(v, TextEncoder("hashing", dim=3, cache_dir=None).encode(TEXTS))
    assert _cos(v[0], v[1]) > _cos(v[0], v[2]) and _cos(v[2], v[3]) > _cos(v[1], v[3])


def test_cache_is_keyed_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = TextEncoder("hashing", dim=3, cache_dir=tmp_path)
    first = enc.encode(TEXTS)
    files = [f for f in tmp_path.iterdir() if f.name != ".recscope-manifest.json"]
    assert len(files) == 1 and files[0].suffix == ".npy"

    def boom(texts: list[str]) -> np.ndarray:
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(enc, "_encode_hashing", boom)
    np.testing.assert_array_equal(enc.encode(TEXTS), first)
    with pytest.raises(AssertionError, match="cache"):
        enc.encode([*TEXTS[:-1], "something new"])
    assert enc.cache_key(TEXTS) != enc.cache_key(TEXTS[::-1])
    assert enc.cache_key(["ab", "c"]) != enc.cache_key(["a", "bc"])


def test_item_texts_follow_the_vocabulary() -> None:
    vocab = Vocabulary(pa.array([10, 20, 30]), name="item_id")
    side = pa.table({"item_id": [30, 10, 99], "text": ["third", None, "unknown item"]})
    assert item_texts(side, vocab) == ["", "", "third"]
    with pytest.raises(DataValidationError, match="no 'title' column"):
        item_texts(side, vocab, column="title")


def test_bad_encoder_settings() -> None:
    with pytest.raises(ConfigError) as err:
        TextEncoder("word2vec")  # type: ignore[arg-type]
    assert err.value.key == "text_encoder"
    with pytest.raises(ConfigError):
        TextEncoder("hashing", dim=0)


def test_auto_falls_back_to_hashing_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import recscope.models.neural.text as text

    monkeypatch.setattr(text, "sentence_model_path", lambda: None)
    assert text.TextEncoder("auto", cache_dir=None).kind == "hashing"
    with pytest.raises(ConfigError, match="text extra"):
        text.TextEncoder("sentence")


@pytest.mark.skipif(sentence_model_path() is None, reason="text extra not installed")
def test_packaged_sentence_model_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = TextEncoder("auto", cache_dir=None)
    assert enc.kind == "sentence" and enc.dim == 384
    v = enc.encode(TEXTS)
    assert v.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(v[:4], axis=1), 1.0, rtol=1e-4)
    assert _cos(v[0], v[1]) > _cos(v[0], v[2]) + 0.2
    assert _cos(v[2], v[3]) > _cos(v[1], v[3]) + 0.2
