"""embrecall: embedding-based candidate retrieval (recall) for recommender systems.

The Python API mirrors the CLI: ``load_config`` -> ``train`` (writes a bundle) -> ``evaluate``
and ``recommend``; ``Bundle`` opens a trained version.  Names are imported when first used, so
that the service (``embrecall.serve``) never loads the training side (PyTorch, gensim).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "Config": "embrecall.config",
    "load_config": "embrecall.config",
    "EmbrecallError": "embrecall.errors",
    "Bundle": "embrecall.export",
    "TrainReport": "embrecall.pipeline",
    "train": "embrecall.pipeline",
    "evaluate": "embrecall.pipeline",
    "recommend": "embrecall.pipeline",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'embrecall' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
