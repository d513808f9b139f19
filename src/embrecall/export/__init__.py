"""Bundles: one model version on disk, the contract between training and serving."""

from embrecall.export.bundle import Bundle, write_bundle

__all__ = ["Bundle", "write_bundle"]
