"""Fitted feature encoders: raw columns in, integer ids / floats for the towers out."""

from embrecall.features.encoders import Encoders

__all__ = ["Encoders"]
