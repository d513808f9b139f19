"""Bundles: one model version on disk, the contract between training and serving.

Reading (``Bundle``) needs numpy, ONNX Runtime and FAISS only; writing (``embrecall.export.writer``)
exports PyTorch towers and so imports torch."""

from embrecall.export.bundle import Bundle

__all__ = ["Bundle"]
