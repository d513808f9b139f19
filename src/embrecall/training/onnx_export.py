"""Export each tower to ONNX with a dynamic batch dimension (``onnx_runtime`` runs them)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embrecall.models.tower import Tower

__all__ = ["export_tower"]


class _Positional(nn.Module):
    """ONNX graphs take positional inputs; the tower takes a dict keyed by feature name."""

    def __init__(self, tower: Tower):
        super().__init__()
        self.tower = tower

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.tower(dict(zip(self.tower.names, args)))


def export_tower(tower: Tower, example: dict[str, np.ndarray], path: Path) -> None:
    """Write ``tower`` to ``path``; ``example`` holds a few rows (at least 3) of real inputs."""
    tower.eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[name])) for name in tower.names)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            _Positional(tower),
            args,
            input_names=list(tower.names),
            output_names=["tower_output"],
            dynamo=True,
            verbose=False,
            dynamic_shapes=(tuple({0: batch} for _ in args),),
        )
    if program is None:  # dynamo=True always returns the program; None is the legacy exporter's answer
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path))
