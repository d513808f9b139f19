"""Every recall channel embrecall knows, by name: the one table that the config, training, the
bundle, the service, ``evaluate`` and ``tune`` read.  No other module lists channel names.

A channel a bundle stores is named by its class's import path and imported when first used, so
that reading a config imports no model code, and a served version loads only the channels it
serves.  Adding a channel is one row here, its class (``models.channel.Listed`` plus ``fit``,
``save`` and ``load``), and, if it has settings, a section in ``config.ChannelsConfig``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChannelKind", "CHANNELS", "TWO_TOWER", "STORED", "EVALUATED"]

TWO_TOWER = "two_tower"


@dataclass(frozen=True)
class ChannelKind:
    """One channel: ``path`` ("module:Class") of the class a bundle stores it as (None for the
    two-tower model, which is the bundle's own towers and index); ``section``: its settings,
    ``channels.<section>`` in the config (None: it has none); ``fitting``: what the progress line
    says while it fits (from any ``data.log.EventLog``, in memory or sharded); ``space``: the
    search space ``tune`` uses when the config declares none (config path -> dimension)."""

    name: str
    path: str | None
    section: str | None = None
    fitting: str = ""
    space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def load_class(self) -> Any:
        """The channel's class, a ``models.channel.StoredChannel`` (imported now: the table itself
        imports no model code)."""
        if self.path is None:
            raise ValueError(f"the {self.name} channel is the bundle's own towers and index, not a stored class")
        module, name = self.path.split(":")
        return getattr(importlib.import_module(module), name)


_KINDS = (
    ChannelKind(
        TWO_TOWER,
        None,
        space={
            "train.loss": {"choices": ["sampled_softmax", "full_softmax"]},
            "train.lr": {"low": 3e-4, "high": 1e-2, "log": True},
            "train.temperature": {"low": 0.02, "high": 0.3, "log": True},
            "train.logq_strength": {"low": 0.0, "high": 1.0},  # how far popularity is corrected away
            "train.batch_size": {"choices": [256, 512, 1024, 2048]},
            "train.weight_decay": {"choices": [0.0, 1e-6, 1e-5]},
            "train.label_smoothing": {"low": 0.0, "high": 0.3},
            "model.dropout": {"low": 0.0, "high": 0.5},
        },
    ),
    ChannelKind("popular", "embrecall.models.popular:Popular", fitting="counting item popularity"),
    ChannelKind(
        "itemcf",
        "embrecall.models.itemcf:ItemCF",
        "itemcf",
        fitting="counting item co-occurrences (ItemCF)",
        space={
            "channels.itemcf.window": {"low": 1, "high": 50, "int": True, "log": True},
            "channels.itemcf.alpha": {"low": 0.0, "high": 1.0},
            "channels.itemcf.pair_decay": {"low": 0.5, "high": 1.0},
            "channels.itemcf.history": {"low": 1, "high": 50, "int": True, "log": True},
            "channels.itemcf.decay": {"low": 0.3, "high": 1.0},
            "channels.itemcf.neighbours": {"low": 20, "high": 1000, "int": True, "log": True},
        },
    ),
    ChannelKind(
        "swing",
        "embrecall.models.swing:Swing",
        "swing",
        fitting="counting Swing similarities",
        space={
            "channels.swing.alpha": {"low": 0.1, "high": 10.0, "log": True},
            "channels.swing.max_users": {"low": 10, "high": 200, "int": True, "log": True},
            "channels.swing.max_items": {"low": 10, "high": 200, "int": True, "log": True},
            "channels.swing.history": {"low": 1, "high": 50, "int": True, "log": True},
            "channels.swing.decay": {"low": 0.3, "high": 1.0},
        },
    ),
    ChannelKind(
        "item2vec",
        "embrecall.models.item2vec:Item2Vec",
        "item2vec",
        fitting="training item2vec",
        space={
            "channels.item2vec.window": {"low": 2, "high": 50, "int": True, "log": True},
            "channels.item2vec.min_count": {"low": 1, "high": 20, "int": True, "log": True},
            "channels.item2vec.ns_exponent": {"low": -0.5, "high": 1.0},
            "channels.item2vec.history": {"low": 1, "high": 50, "int": True, "log": True},
            "channels.item2vec.decay": {"low": 0.3, "high": 1.0},
            "channels.item2vec.session_gap": {"low": 600, "high": 2_592_000, "int": True, "log": True},
        },
    ),
    ChannelKind(
        "ease",
        "embrecall.models.ease:Ease",
        "ease",
        fitting="solving EASE",
        space={
            "channels.ease.l2": {"low": 10.0, "high": 1e4, "log": True},
            "channels.ease.decay": {"low": 0.5, "high": 1.0},
            "channels.ease.history": {"low": 5, "high": 200, "int": True, "log": True},
            "channels.ease.min_count": {"low": 1, "high": 20, "int": True, "log": True},
        },
    ),
)

CHANNELS: dict[str, ChannelKind] = {kind.name: kind for kind in _KINDS}
STORED = tuple(name for name, kind in CHANNELS.items() if kind.path is not None)  # all but the two-tower model
# What `evaluate` can measure: every channel and "served" (channels.serve merged as the service
# merges them; with a bundle, through the service's own objects).
EVALUATED = (*CHANNELS, "served")
