"""Approximate nearest-neighbour indexes over item vectors."""

from embrecall.index.faiss_index import FaissIndex

__all__ = ["FaissIndex"]
