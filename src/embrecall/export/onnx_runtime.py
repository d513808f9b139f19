"""Run an exported tower with ONNX Runtime: the serving side, which needs no PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from embrecall.errors import BundleError

__all__ = ["OnnxTower"]


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
