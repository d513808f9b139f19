"""The channels a bundle can carry into the service, by name.  A channel becomes servable by
implementing ``StoredChannel`` (``save`` / ``load``) and being named here; the two-tower model
is the bundle's own (its towers and index) and so is not listed."""

from __future__ import annotations

from embrecall.models.channel import StoredChannel
from embrecall.models.ease import Ease
from embrecall.models.item2vec import Item2Vec
from embrecall.models.itemcf import ItemCF
from embrecall.models.popular import Popular

__all__ = ["STORED"]

STORED: dict[str, type[StoredChannel]] = {"popular": Popular, "itemcf": ItemCF, "item2vec": Item2Vec, "ease": Ease}
