"""Dithering: a little noise on log-rank so that repeated requests see more of the long tail.

New rank key = log(rank) + N(0, sqrt(log epsilon)); epsilon = 1 leaves the order alone, 1.5-2
is a common setting.  The top stays mostly stable (log-rank grows slowly there), deeper items
move more.  Applied after a channel, on a list ``oversample`` times longer than asked.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np

from embrecall.index.protocol import Filters
from embrecall.models.channel import Candidates, Channel, Timings, UserQuery

__all__ = ["Dithered"]


class Dithered:
    def __init__(self, channel: Channel, epsilon: float, oversample: int = 2, seed: int | None = None):
        self.channel = channel
        self.name = channel.name
        self.sigma = math.sqrt(math.log(epsilon)) if epsilon > 1 else 0.0
        self.oversample = oversample
        self.rng = np.random.default_rng(seed)

    def recommend(
        self,
        queries: Sequence[UserQuery],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        filters: Sequence[Filters] | None = None,
        timings: Timings | None = None,
    ) -> list[Candidates]:
        found = self.channel.recommend(queries, k * self.oversample, exclude, filters, timings)
        out = []
        for c in found:
            key = np.log(np.arange(1, len(c.item_ids) + 1)) + self.rng.normal(0.0, self.sigma, len(c.item_ids))
            order = np.argsort(key, kind="stable")[:k]
            out.append(Candidates([c.item_ids[i] for i in order], c.scores[order], [c.channels[i] for i in order]))
        return out
