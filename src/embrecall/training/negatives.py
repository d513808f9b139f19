"""Mixed negative sampling: in-batch + global by popularity**alpha + hard (same category or
city) + shown-but-not-clicked, as one module.

Each source has a proposal distribution; the logQ correction subtracts, for every candidate,
the log of its expected count under the whole mixture,
    n(j | row i) = B p_batch(j) + G p_global(j) + H p_hard(j | group of i's positive) + E p_exposure(j | user i),
so the corrected softmax estimates the full softmax whichever source drew the candidate
(Yi et al. 2019; Yang et al. 2020, "Mixed Negative Sampling").  p_exposure is counted for the
exposure draws themselves only (membership of other candidates in a user's exposure set is
not looked up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embrecall.config import NegativesConfig

__all__ = ["PopularitySampler", "GroupSampler", "ExposureSampler", "MixedNegatives", "NegativeDraw"]


class PopularitySampler:
    """Catalog positions drawn with probability proportional to ``counts**alpha``."""

    def __init__(self, counts: np.ndarray, alpha: float):
        w = np.asarray(counts, dtype=np.float64) ** alpha
        w[np.asarray(counts) <= 0] = 0.0
        self.p = w / w.sum()
        self._cum = np.cumsum(self.p)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(n) * self._cum[-1]
        return np.minimum(np.searchsorted(self._cum, u, side="right"), len(self.p) - 1)


class GroupSampler:
    """For each positive, items of its group (category, city) by ``counts**alpha`` within the group.

    ``groups``: (n_items,) int codes, -1 where an item has no group (never drawn, never conditioned on).
    """

    def __init__(self, groups: np.ndarray, counts: np.ndarray, alpha: float):
        self.groups = np.asarray(groups)
        w = np.where((self.groups >= 0) & (np.asarray(counts) > 0), np.asarray(counts, np.float64) ** alpha, 0.0)
        self._order = np.argsort(self.groups, kind="stable")
        sorted_w = w[self._order]
        self._cum = np.cumsum(sorted_w)
        n_groups = int(self.groups.max()) + 1 if len(self.groups) else 0
        sorted_groups = self.groups[self._order]
        self._start = np.searchsorted(sorted_groups, np.arange(n_groups), side="left")
        self._end = np.searchsorted(sorted_groups, np.arange(n_groups), side="right")
        before = np.r_[0.0, self._cum][self._start]
        self._mass = np.r_[0.0, self._cum][self._end] - before
        self._before = before
        self._w = w

    def draw(self, positives: np.ndarray, n_per: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(B, n_per) items and a validity mask (False where the positive's group has nothing to draw)."""
        g = self.groups[positives]
        ok = g >= 0
        gg = np.where(ok, g, 0)
        mass = np.where(ok, self._mass[gg], 0.0)
        u = self._before[gg][:, None] + rng.random((len(positives), n_per)) * mass[:, None]
        pos = np.minimum(np.searchsorted(self._cum, u, side="right"), len(self._order) - 1)
        items = self._order[pos]
        valid = (mass[:, None] > 0) & (self.groups[items] == g[:, None])
        return items, valid

    def prob(self, candidates: np.ndarray, positives: np.ndarray) -> np.ndarray:
        """p(candidate | group of the row's positive), broadcast over (B, C)."""
        g = self.groups[positives][:, None]
        same = (self.groups[candidates] == g) & (g >= 0)
        mass = self._mass[np.maximum(g, 0)]
        return np.where(same & (mass > 0), self._w[candidates] / np.maximum(mass, 1e-300), 0.0)


class ExposureSampler:
    """Uniformly among the items a user was shown and did not click (CSR lists per user code)."""

    def __init__(self, indptr: np.ndarray, items: np.ndarray):
        self.indptr = indptr
        self.items = items

    def draw(self, users: np.ndarray, n_per: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        start, size = self.indptr[users], np.diff(self.indptr)[users]
        offset = (rng.random((len(users), n_per)) * np.maximum(size, 1)[:, None]).astype(np.int64)
        idx = np.minimum(start[:, None] + offset, max(len(self.items) - 1, 0))
        valid = np.broadcast_to(size[:, None] > 0, offset.shape)
        items = self.items[idx] if len(self.items) else np.zeros_like(offset)
        return items, valid.copy()

    def prob(self, users: np.ndarray) -> np.ndarray:
        return 1.0 / np.maximum(np.diff(self.indptr)[users], 1)


@dataclass
class NegativeDraw:
    """Candidates of one batch beyond its in-batch positives, with the mixture's log expected counts.

    shared: (G,) items every row scores; per_row: (B, R) items row i alone scores; valid: (B, R);
    log_count_batch: (B, P + G) for [in-batch positives (P: B, or every rank's), shared];
    log_count_row: (B, R); log_weight_batch: (P + G,), log_weight_row: (R,) — the per-source
    weights, as logits offsets.
    """

    shared: np.ndarray
    per_row: np.ndarray
    valid: np.ndarray
    log_count_batch: np.ndarray
    log_count_row: np.ndarray
    log_weight_batch: np.ndarray
    log_weight_row: np.ndarray


class MixedNegatives:
    """Draws the extra negatives of a batch and the matching logQ terms.

    Under torchrun a rank's rows score every rank's positives (``in_batch``) and the shared
    negatives, which every rank draws alike (``shared_rng`` seeded the same on each); each rank
    draws its own rows' hard and exposure negatives (``rng``)."""

    def __init__(self, cfg: NegativesConfig, counts: np.ndarray, groups: np.ndarray | None, exposures: bool):
        """``groups``: each item's hard-negative group (None: no hard negatives); ``exposures``:
        whether the examples carry shown-but-not-clicked items."""
        self.cfg = cfg
        self.p_batch = np.asarray(counts, np.float64) / max(float(np.sum(counts)), 1.0)
        self.global_ = PopularitySampler(counts, cfg.global_alpha) if cfg.global_count else None
        self.hard = GroupSampler(groups, counts, cfg.hard_alpha) if cfg.hard_count and groups is not None else None
        self.exposures = bool(cfg.exposure_count) and exposures

    @property
    def active(self) -> bool:
        return bool(self.global_ or self.hard or self.exposures)

    def _expected(self, candidates: np.ndarray, positives: np.ndarray, batch: int) -> np.ndarray:
        n = batch * self.p_batch[candidates]
        if self.global_ is not None:
            n = n + self.cfg.global_count * self.global_.p[candidates]
        if self.hard is not None:
            n = n + self.cfg.hard_count * self.hard.prob(candidates, positives)
        return n

    def draw(
        self,
        positives: np.ndarray,
        users: np.ndarray,
        rng: np.random.Generator,
        exposure: ExposureSampler | None = None,
        in_batch: np.ndarray | None = None,
        shared_rng: np.random.Generator | None = None,
    ) -> NegativeDraw:
        """Negatives for the rows of ``positives`` (their ``users``' codes in ``exposure``);
        ``in_batch``: every positive the rows score (default: their own), ``shared_rng``: the
        generator of the shared draws (default: ``rng``)."""
        c, B = self.cfg, len(positives)
        in_batch = positives if in_batch is None else in_batch
        shared = (
            self.global_.draw(c.global_count, shared_rng or rng) if self.global_ is not None else np.zeros(0, np.int64)
        )
        parts, valids, weights = [], [], []
        if self.hard is not None:
            items, ok = self.hard.draw(positives, c.hard_count, rng)
            parts.append(items)
            valids.append(ok)
            weights.append(np.full(c.hard_count, np.log(c.hard_weight)))
        exposure = exposure if self.exposures else None
        if exposure is not None:
            items, ok = exposure.draw(users, c.exposure_count, rng)
            parts.append(items)
            valids.append(ok)
            weights.append(np.full(c.exposure_count, np.log(c.exposure_weight)))
        per_row = np.concatenate(parts, axis=1) if parts else np.zeros((B, 0), np.int64)
        valid = np.concatenate(valids, axis=1) if valids else np.zeros((B, 0), bool)
        batch_cands = np.broadcast_to(np.r_[in_batch, shared][None, :], (B, len(in_batch) + len(shared)))
        count_batch = self._expected(batch_cands, positives, len(in_batch))
        count_row = self._expected(per_row, positives, len(in_batch))
        if exposure is not None:
            count_row[:, per_row.shape[1] - c.exposure_count :] += c.exposure_count * exposure.prob(users)[:, None]
        floor = 1e-12
        return NegativeDraw(
            shared=shared,
            per_row=per_row,
            valid=valid,
            log_count_batch=np.log(np.maximum(count_batch, floor)).astype(np.float32),
            log_count_row=np.log(np.maximum(count_row, floor)).astype(np.float32),
            log_weight_batch=np.r_[
                np.full(len(in_batch), np.log(c.in_batch_weight)), np.full(len(shared), np.log(c.global_weight))
            ].astype(np.float32),
            log_weight_row=(np.concatenate(weights) if weights else np.zeros(0)).astype(np.float32),
        )
