"""Export each tower to ONNX with a dynamic batch dimension, and run it with ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from embrecall.errors import BundleError
from embrecall.models.tower import Tower

__all__ = ["export_tower", "OnnxTower"]


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
        program = torch.onnx.export(_Positional(tower), args, input_names=list(tower.names),
                                    output_names=["tower_output"], dynamo=True, verbose=False,
                                    dynamic_shapes=(tuple({0: batch} for _ in args),))
    program.save(str(path))


class OnnxTower:
    """A tower loaded from ONNX: encoded inputs (numpy, keyed by feature name) -> (B, D) vectors."""

    def __init__(self, path: Path, threads: int = 1):
        if not Path(path).is_file():
            raise BundleError(f"tower file {path} not found; the bundle is incomplete")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        missing = [n for n in self.names if n not in inputs]
        if missing:
            raise BundleError(f"tower expects inputs {self.names}, missing {missing}")
        return self.session.run(None, {n: inputs[n] for n in self.names})[0]
