"""Bundles: one model version on disk, the contract between training and serving.

This package reads, checks and publishes them and needs numpy, ONNX Runtime and FAISS only;
writing one (``embrecall.training.bundle_writer``) exports PyTorch towers and lives with training."""

from embrecall.export.bundle import Bundle

__all__ = ["Bundle"]
