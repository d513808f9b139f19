"""Fitting a stored channel by its name in the channel table: what `train`, `evaluate`, `tune`
and the benchmarks call, without loading the two-tower model's training code."""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd

from embrecall.channel_table import CHANNELS, STORED
from embrecall.config import Config
from embrecall.data.log import EventLog
from embrecall.errors import ConfigError
from embrecall.models.channel import StoredChannel
from embrecall.progress import step

__all__ = ["fit_channel", "fit_problem"]


def fit_problem(
    name: str, cfg: Config, counts: pd.Series, items: pd.DataFrame | None, columns: Collection[str]
) -> str | None:
    """Why the stored channel ``name`` cannot be fitted on a log of these item ``counts`` with event
    ``columns`` (None: it can), said before anything is trained."""
    kind = CHANNELS[name]
    return kind.load_class().problem(
        getattr(cfg.channels, kind.section) if kind.section else None, counts, items, columns
    )


def fit_channel(
    name: str, cfg: Config, log: EventLog, items: pd.DataFrame | None, show_progress: bool = True
) -> StoredChannel:
    """One of the channels a bundle can store (all but the two-tower model), fitted on ``log``
    with its ``channels.<section>`` settings."""
    if name not in STORED:
        raise ConfigError(f"'{name}' is not a channel a bundle stores; choose from {list(STORED)}")
    kind = CHANNELS[name]
    cls = kind.load_class()
    model = cls(getattr(cfg.channels, kind.section)) if kind.section else cls()
    with step(kind.fitting, show_progress):
        return model.fit(log, items)
