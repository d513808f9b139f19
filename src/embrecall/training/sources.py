"""Where a fit's training examples come from, epoch by epoch: a log held in memory, or a log
read one part at a time (a sharded log; under torchrun, each rank its own parts)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from embrecall.data.log import EventLog
from embrecall.features import Encoders
from embrecall.training.distributed import Ranks, my_share, smallest
from embrecall.training.examples import Catalog, Examples

__all__ = ["Epoch", "InMemory", "FromParts", "Recent"]

Epoch = tuple[int, Iterator[tuple[Examples, np.ndarray]]]  # steps, then each step's examples and rows


@dataclass(frozen=True)
class Recent:
    """What a warm update walks each epoch: every example newer than ``since`` (the parent's last
    event), and ``replay`` times as many older ones, drawn anew each epoch, so that it learns the
    new events without forgetting the rest."""

    since: int
    replay: float

    def count(self, times: np.ndarray) -> int:
        new = int((times > self.since).sum())
        return new + min(len(times) - new, round(self.replay * new))

    def pick(self, units: np.ndarray, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``units`` (rows, or window starts) to walk, given the time each one ends at."""
        new = times > self.since
        old = units[~new]
        drawn = rng.choice(old, min(len(old), round(self.replay * int(new.sum()))), replace=False)
        return np.r_[units[new], drawn]


class InMemory:
    """Every example at hand: one global order per epoch, each rank taking its slice of each batch."""

    def __init__(self, examples: Examples, windowed: bool, recent: Recent | None = None):
        self.examples, self.windowed, self.recent = examples, windowed, recent
        self.catalog = examples.catalog
        self.groups, self.exposure = examples.groups, examples.exposure  # for hard and exposure negatives

    def epoch(self, rng: np.random.Generator, batch_size: int, r: Ranks, limit: int | None = None) -> Epoch:
        """Event rows per step, or (with a sequence feature) window starts adding up to about
        ``batch_size`` target pairs per step; at most ``limit`` steps."""
        ex = self.examples
        units = ex.windows() if self.windowed else np.arange(len(ex))
        per_step = max(1, round(batch_size * r.world * len(units) / max(len(ex), 1)))
        if self.recent is not None:
            units = self.recent.pick(units, ex.unit_times(units, self.windowed), rng)
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
        recent: Recent | None = None,
    ):
        """``counts``: the log's ``item_counts``, in the encoders' catalog order."""
        self.log, self.encoders, self.users, self.items, self.recent = log, encoders, users, items, recent
        self.catalog = Catalog(encoders, items, counts.to_numpy(np.float64))
        self.mine = list(range(r.rank, log.part_count, r.world))

    def epoch(self, rng: np.random.Generator, batch_size: int, r: Ranks, limit: int | None = None) -> Epoch:
        steps = smallest(sum(self._rows(s) // batch_size for s in self.mine))
        steps = steps if limit is None else min(steps, limit)
        return steps, self._walk(rng, batch_size, steps)

    def _walk(self, rng: np.random.Generator, batch_size: int, steps: int) -> Iterator[tuple[Examples, np.ndarray]]:
        left = steps
        for shard in rng.permutation(self.mine):
            if left == 0:
                return
            ex = Examples(self.log.read(int(shard)), self.encoders, self.users, self.items, catalog=self.catalog)
            rows = np.arange(len(ex))
            rows = rows if self.recent is None else self.recent.pick(rows, ex.timestamp, rng)
            order = rows[rng.permutation(len(rows))]
            for b in range(min(len(rows) // batch_size, left)):
                yield ex, order[b * batch_size : (b + 1) * batch_size]
                left -= 1

    def _rows(self, shard: int) -> int:
        """The rows an epoch walks in ``shard`` (a warm update reads its times to count them)."""
        if self.recent is None:
            return self.log.rows(shard)
        return self.recent.count(self.log.read(shard, ["timestamp"])["timestamp"].to_numpy())
