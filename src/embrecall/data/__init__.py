"""Reading, validating, splitting and generating interaction logs.

Names are imported when first used, so that a module that needs one small part (the service
reads ``data.timestamps``) does not load every reader.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Dataset": "embrecall.data.dataset",
    "load_dataset": "embrecall.data.load",
    "Split": "embrecall.data.split",
    "leave_last_out": "embrecall.data.split",
    "time_split": "embrecall.data.split",
    "split_dataset": "embrecall.data.split",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'embrecall.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
