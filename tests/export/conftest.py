from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def bundle(original, tmp_path) -> Path:
    """A copy of the module's ``original`` bundle, for a test to edit or damage."""
    copy = tmp_path / "src" / original.name
    shutil.copytree(original, copy)
    return copy
