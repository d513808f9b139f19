"""Where a fit's training examples come from, epoch by epoch: a log held in memory, or a log
read one part at a time (a sharded log; under torchrun, each rank its own parts)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from embrecall.data.log import EventLog
from embrecall.features import Encoders
from embrecall.training.distributed import Ranks, my_share, smallest
from embrecall.training.examples import Catalog, Examples

__all__ = ["Epoch", "InMemory", "FromParts"]

Epoch = tuple[int, Iterator[tuple[Examples, np.ndarray]]]  # steps, then each step's examples and rows


class InMemory:
    """Every example at hand: one global order per epoch, each rank taking its slice of each batch."""

    def __init__(self, examples: Examples, windowed: bool):
        self.examples, self.windowed = examples, windowed
        self.catalog = examples.catalog
        self.groups, self.exposure = examples.groups, examples.exposure  # for hard and exposure negatives

    def epoch(self, rng: np.random.Generator, batch_size: int, r: Ranks, limit: int | None = None) -> Epoch:
        """Event rows per step, or (with a sequence feature) window starts adding up to about
        ``batch_size`` target pairs per step; at most ``limit`` steps."""
        ex = self.examples
        units = ex.windows() if self.windowed else np.arange(len(ex))
        per_step = max(1, round(batch_size * r.world * len(units) / max(len(ex), 1)))
        order = units[rng.permutation(len(units))]
        steps = [order[s : s + per_step] for s in range(0, len(order), per_step)]
        if r.world > 1:  # every rank walks the same global batches, each taking its slice
            steps = [mine for mine in (my_share(s, r) for s in steps) if len(mine)]
        steps = steps[:limit]
        return len(steps), ((ex, s) for s in steps)


class FromParts:
    """A log read part by part: this rank's parts (every ``world``-th, from its rank) in a new
    random order each epoch, one in memory at a time, its rows shuffled into steps of exactly
    ``batch_size`` (a part's last partial step is left out); every rank takes as many steps as
    the rank with the fewest rows can.  Event rows only: no sequence windows, no hard or exposure
    negatives (they need the whole log)."""

    windowed, groups, exposure = False, None, None

    def __init__(
        self,
        log: EventLog,
        encoders: Encoders,
        users: pd.DataFrame | None,
        items: pd.DataFrame | None,
        counts: pd.Series,
        r: Ranks,
    ):
        """``counts``: the log's ``item_counts``, in the encoders' catalog order."""
        self.log, self.encoders, self.users, self.items = log, encoders, users, items
        self.catalog = Catalog(encoders, items, counts.to_numpy(np.float64))
        self.mine = list(range(r.rank, log.part_count, r.world))

    def epoch(self, rng: np.random.Generator, batch_size: int, r: Ranks, limit: int | None = None) -> Epoch:
        steps = smallest(sum(self.log.rows(s) // batch_size for s in self.mine))
        steps = steps if limit is None else min(steps, limit)
        return steps, self._walk(rng, batch_size, steps)

    def _walk(self, rng: np.random.Generator, batch_size: int, steps: int) -> Iterator[tuple[Examples, np.ndarray]]:
        left = steps
        for shard in rng.permutation(self.mine):
            if left == 0:
                return
            ex = Examples(self.log.read(int(shard)), self.encoders, self.users, self.items, catalog=self.catalog)
            order = rng.permutation(len(ex))
            for b in range(min(len(ex) // batch_size, left)):
                yield ex, order[b * batch_size : (b + 1) * batch_size]
                left -= 1
