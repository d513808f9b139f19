"""Where a fit's training examples come from, epoch by epoch: a log held in memory, or a log
read one part at a time (a sharded log; under torchrun, each rank its own parts)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from embrecall.config import SequenceFeature
from embrecall.data.log import EventLog
from embrecall.data.split import sort_events
from embrecall.features import Encoders
from embrecall.training.distributed import Ranks, my_share, smallest
from embrecall.training.examples import Catalog, Examples, user_bounds, walk_units

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

    def epoch(self, rng: np.random.Generator, batch_size: int, r: Ranks, limit: int | None = None) -> Epoch:
        """Event rows per step, or (with a sequence feature) window starts adding up to about
        ``batch_size`` target pairs per step; at most ``limit`` steps."""
        ex = self.examples
        units, times = ex.units(self.windowed)
        per_step = max(1, round(batch_size * r.world * len(units) / max(len(ex), 1)))
        if self.recent is not None:
            units = self.recent.pick(units, times, rng)
        order = units[rng.permutation(len(units))]
        steps = [order[s : s + per_step] for s in range(0, len(order), per_step)]
        if r.world > 1:  # every rank walks the same global batches, each taking its slice
            steps = [mine for mine in (my_share(s, r) for s in steps) if len(mine)]
        steps = steps[:limit]
        return len(steps), ((ex, s) for s in steps)


class FromParts:
    """A log read part by part: this rank's parts (every ``world``-th, from its rank) in a new
    random order each epoch, one in memory at a time, its units (event rows, or sequence windows:
    a part holds whole users) shuffled into steps of ``batch_size`` rows, or of as many windows as
    hold about that many targets (a part's last partial step is left out); every rank takes as
    many steps as the rank with the fewest units can."""

    def __init__(
        self,
        log: EventLog,
        encoders: Encoders,
        users: pd.DataFrame | None,
        items: pd.DataFrame | None,
        counts: pd.Series,
        r: Ranks,
        recent: Recent | None = None,
        windowed: bool = False,
        group_column: str | None = None,
    ):
        """``counts``: the log's ``item_counts``, in the encoders' catalog order; ``group_column``:
        the item attribute of hard negatives.  (Shards carry no exposure events: ``DataConfig``
        refuses ``data.exposure_events`` with ``data.shards``.)"""
        self.log, self.encoders, self.users, self.items, self.recent = log, encoders, users, items, recent
        self.windowed = windowed
        self.catalog = Catalog(encoders, items, counts.to_numpy(np.float64), group_column)
        self.mine = list(range(r.rank, log.part_count, r.world))
        sequence = (f.max_len for f in encoders.spec.user if isinstance(f, SequenceFeature))
        self._window = next(sequence, None) if windowed else None
        counted = {s: self._units(s) for s in self.mine}
        self._walked = {s: walked for s, (_, walked) in counted.items()}
        rows = sum(log.rows(s) for s in self.mine)
        self._per_row = sum(held for held, _ in counted.values()) / max(rows, 1)  # units per event row

    def epoch(self, rng: np.random.Generator, batch_size: int, r: Ranks, limit: int | None = None) -> Epoch:
        per_step = max(1, round(batch_size * self._per_row))
        steps = smallest(sum(n // per_step for n in self._walked.values()))
        steps = steps if limit is None else min(steps, limit)
        return steps, self._walk(rng, per_step, steps)

    def _walk(self, rng: np.random.Generator, per_step: int, steps: int) -> Iterator[tuple[Examples, np.ndarray]]:
        left = steps
        for shard in rng.permutation(self.mine):
            if left == 0:
                return
            ex = Examples(self.log.read(int(shard)), self.encoders, self.users, self.items, catalog=self.catalog)
            units, times = ex.units(self.windowed)
            units = units if self.recent is None else self.recent.pick(units, times, rng)
            order = units[rng.permutation(len(units))]
            for b in range(min(len(units) // per_step, left)):
                yield ex, order[b * per_step : (b + 1) * per_step]
                left -= 1

    def _units(self, shard: int) -> tuple[int, int]:
        """How many units ``shard`` holds and how many an epoch walks (windows, and a warm
        update's choice, need its users and times)."""
        if self.recent is None and self._window is None:
            rows = self.log.rows(shard)
            return rows, rows
        ev = sort_events(self.log.read(shard, ["user_id", "timestamp"]))
        start, end = user_bounds(ev["user_id"].to_numpy())
        units, times = walk_units(start, end, ev["timestamp"].to_numpy(), self._window)
        return len(units), len(units) if self.recent is None else self.recent.count(times)
