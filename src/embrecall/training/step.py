"""One training step's loss, for every loss and example kind, on one process or several.

Each step makes one call of the model (``net``: the model, or its DistributedDataParallel wrapper,
which syncs the gradients of what that call computed): the user vectors of the step's rows, and
the vectors of every candidate item its loss scores.  Under torchrun a rank's rows score every
rank's positives: the in-batch softmax over event rows gathers their vectors with gradients
(every rank has as many rows); sequence windows and mixed negatives, whose ranks may hold
different numbers of targets, gather the positives' catalog indices and compute their vectors on
each rank (DDP's average of the ranks' gradients is then the gradient of the global batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from embrecall.config import TrainConfig
from embrecall.training.distributed import Ranks, gather, gather_rows
from embrecall.training.examples import Catalog, Examples
from embrecall.training.losses import bce_loss, mixed_softmax_loss, sampled_softmax_loss, softmax_loss
from embrecall.training.negatives import MixedNegatives, PopularitySampler

__all__ = ["Draws", "StepLoss"]


@dataclass(frozen=True)
class Draws:
    """An epoch's random draws: ``shared`` alike on every rank (negatives every row scores),
    ``own`` this rank's (each row's own negatives)."""

    shared: np.random.Generator
    own: np.random.Generator

    @classmethod
    def of_epoch(cls, seed: int, epoch: int, r: Ranks) -> Draws:
        return cls(np.random.default_rng([seed, epoch]), np.random.default_rng([seed, epoch, r.rank]))


class StepLoss:
    """The loss of a step's units (event rows or window starts) of ``Examples``."""

    def __init__(
        self, t: TrainConfig, net: torch.nn.Module, r: Ranks, windowed: bool, mixed: MixedNegatives, catalog: Catalog
    ):
        """``catalog``: where the model is (its device), each item's training events (bce draws
        its negatives by them)."""
        self.t, self.net, self.r, self.windowed, self.mixed = t, net, r, windowed, mixed
        self.device = catalog.device
        self._bce = PopularitySampler(catalog.item_counts, t.negative_alpha) if t.loss == "bce" else None

    def _on(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``values`` where the model is."""
        return (torch.from_numpy(values) if isinstance(values, np.ndarray) else values).to(self.device)

    def __call__(self, ex: Examples, step: np.ndarray, draws: Draws) -> tuple[torch.Tensor, int]:
        """The loss and how many training pairs (targets) it holds."""
        t, c = self.t, ex.catalog
        batch, at, rows = ex.window_batch(step) if self.windowed else (ex.user_batch(step), None, step)
        inputs = {k: self._on(v) for k, v in batch.items()}
        at = None if at is None else self._on(at)
        pos = ex.item_idx[rows]
        if t.loss == "full_softmax":
            user, items = self.net(inputs, c.item_inputs, at)  # every catalog item is a candidate
            zeros = items.new_zeros(len(items))
            return softmax_loss(user, items, self._on(pos), zeros, t.temperature, t.label_smoothing), len(rows)
        if t.loss == "bce":
            return self._bce_loss(ex, inputs, at, pos, draws), len(rows)
        if not self.windowed and not self.mixed.active:
            return self._in_batch(ex, inputs, pos), len(rows)
        every, offset = gather_rows(pos)
        if self.mixed.active:
            return self._mixed(ex, inputs, at, rows, pos, every, offset, draws), len(rows)
        distinct, labels = np.unique(every, return_inverse=True)  # windows hold many pairs: each positive once
        user, items = self.net(inputs, c.item_batch(distinct), at)
        log_q = self._on(ex.log_inclusion(distinct, len(every))) * t.logq_strength
        mine = self._on(labels[offset : offset + len(rows)])
        return softmax_loss(user, items, mine, log_q, t.temperature, t.label_smoothing), len(rows)

    def _in_batch(self, ex: Examples, inputs: dict[str, torch.Tensor], pos: np.ndarray) -> torch.Tensor:
        """The in-batch softmax against every rank's positives (their vectors gathered with their
        gradients), logQ by each item's share of training events."""
        t, c = self.t, ex.catalog
        user, mine = self.net(inputs, c.item_batch(pos))
        every = gather(self._on(pos))
        return sampled_softmax_loss(
            user,
            gather(mine),
            every,
            c.log_q[every] * t.logq_strength,
            t.temperature,
            t.remove_accidental_hits,
            t.label_smoothing,
            offset=self.r.rank * len(pos),
        )

    def _mixed(
        self,
        ex: Examples,
        inputs: dict[str, torch.Tensor],
        at: torch.Tensor | None,
        rows: np.ndarray,
        pos: np.ndarray,
        every: np.ndarray,
        offset: int,
        draws: Draws,
    ) -> torch.Tensor:
        t = self.t
        d = self.mixed.draw(pos, ex.user_code[rows], draws.own, ex.exposure, every, draws.shared)
        batch_idx = np.r_[every, d.shared]
        user, items = self.net(inputs, ex.catalog.item_batch(np.r_[batch_idx, d.per_row.reshape(-1)]), at)
        B, R = d.per_row.shape
        n = self._on
        return mixed_softmax_loss(
            user,
            items[: len(batch_idx)],
            items[len(batch_idx) :].view(B, R, items.shape[1]),
            n(batch_idx),
            n(d.per_row),
            n(d.valid),
            n(d.log_count_batch),
            n(d.log_count_row),
            n(d.log_weight_batch),
            n(d.log_weight_row),
            t.temperature,
            t.logq_strength,
            t.label_smoothing,
            offset=offset,
        )

    def _bce_loss(
        self, ex: Examples, inputs: dict[str, torch.Tensor], at: torch.Tensor | None, pos: np.ndarray, draws: Draws
    ) -> torch.Tensor:
        """Binary cross-entropy against ``num_negatives`` items per row drawn by popularity**alpha."""
        t, B = self.t, len(pos)
        assert self._bce is not None
        neg = self._bce.draw(B * t.num_negatives, draws.own).reshape(B, t.num_negatives)
        user, items = self.net(inputs, ex.catalog.item_batch(np.r_[pos, neg.reshape(-1)]), at)
        negatives = items[B:].view(B, t.num_negatives, items.shape[1])
        return bce_loss(user, items[:B], negatives, t.temperature, neg_mask=self._on(neg != pos[:, None]))
