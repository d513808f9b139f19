"""Retrieval losses over user and item embeddings.

Shapes: B users in a batch, D embedding dim, N sampled negatives per positive.  A user may
also be K vectors (B, K, D) (``model.interests``): a user's score of an item is then the best
of its interests' (the label-aware max of ComiRec), everywhere a score is taken.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sampled_softmax_loss", "softmax_loss", "mixed_softmax_loss", "bce_loss", "scores", "row_scores"]


def scores(user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B, C) scores of every user (B, D) or (B, K, D) against every item (C, D)."""
    if user.dim() == 2:
        return user @ items.T
    return torch.einsum("bkd,cd->bkc", user, items).amax(dim=1)


def row_scores(user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B, N) scores of each user (B, D) or (B, K, D) against its own items (B, N, D)."""
    if user.dim() == 2:
        return torch.einsum("bd,bnd->bn", user, items)
    return torch.einsum("bkd,bnd->bkn", user, items).amax(dim=1)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy whose label smoothing spreads only over live candidates: masked ones
    (logit ``finfo.min``) are not candidates and would otherwise make the loss explode."""
    if label_smoothing == 0.0:
        return F.cross_entropy(logits, labels)
    logp = logits.log_softmax(dim=-1)
    nll = -logp.gather(1, labels.unsqueeze(1)).squeeze(1)
    live = logits > torch.finfo(logits.dtype).min / 2
    spread = -logp.masked_fill(~live, 0.0).sum(dim=-1) / live.sum(dim=-1)
    return ((1.0 - label_smoothing) * nll + label_smoothing * spread).mean()


def softmax_loss(
    user: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    log_q: torch.Tensor,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Softmax over distinct candidate items: the whole catalog (full softmax, ``log_q`` zero), or
    the distinct positives of a batch (``log_q``: log of each one's chance to be in a batch).

    user: (N, D); candidates: (C, D); labels: (N,) column of each row's positive; log_q: (C,).
    Each item appears once, so no accidental hit can occur.
    """
    logits = scores(user, candidates) / temperature - log_q.unsqueeze(0)  # (N, C)
    return _cross_entropy(logits, labels, label_smoothing)


def sampled_softmax_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    item_idx: torch.Tensor,
    log_q: torch.Tensor,
    temperature: float,
    remove_accidental_hits: bool = True,
    label_smoothing: float = 0.0,
    offset: int = 0,
) -> torch.Tensor:
    """Softmax over in-batch items, each user's own item the positive.

    user: (B, D); item: (C, D) the batch's positives, row ``offset + b`` user b's (C = B, or the
    positives of every rank's slice under torch.distributed); item_idx: (C,) catalog index of
    each; log_q: (C,) log of the probability that each item is drawn as an in-batch negative (its
    share of training events), already scaled by the correction strength (zeros turn it off).
    Subtracting it keeps popular items from being pushed down just for appearing in many batches
    (Yi et al., 2019).  Accidental hits — the same item as another row's positive — are masked out.
    """
    logits = scores(user, item) / temperature  # (B, C)
    logits = logits - log_q.unsqueeze(0)
    rows = torch.arange(user.shape[0], device=user.device)
    labels = rows + offset
    if remove_accidental_hits:
        same = item_idx.unsqueeze(0) == item_idx[labels].unsqueeze(1)  # (B, C)
        same[rows, labels] = False
        logits = logits.masked_fill(same, torch.finfo(logits.dtype).min)
    return _cross_entropy(logits, labels, label_smoothing)


def bce_loss(
    user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float, neg_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy: positives towards 1, sampled negatives towards 0.

    user, pos: (B, D); neg: (B, N, D); neg_mask: (B, N) False where a negative is the positive itself.
    """
    pos_logit = row_scores(user, pos.unsqueeze(1)).squeeze(1) / temperature  # (B,)
    neg_logit = row_scores(user, neg) / temperature  # (B, N)
    pos_loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
    neg_losses = F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit), reduction="none")
    if neg_mask is not None:
        weights = neg_mask.to(neg_losses.dtype)
        return pos_loss + (neg_losses * weights).sum() / weights.sum().clamp_min(1.0)
    return pos_loss + neg_losses.mean()


def mixed_softmax_loss(
    user: torch.Tensor,
    batch_items: torch.Tensor,
    row_items: torch.Tensor,
    batch_idx: torch.Tensor,
    row_idx: torch.Tensor,
    row_valid: torch.Tensor,
    log_count_batch: torch.Tensor,
    log_count_row: torch.Tensor,
    log_weight_batch: torch.Tensor,
    log_weight_row: torch.Tensor,
    temperature: float,
    logq_strength: float = 1.0,
    label_smoothing: float = 0.0,
    offset: int = 0,
) -> torch.Tensor:
    """Sampled softmax over in-batch positives + shared negatives + each row's own negatives.

    user: (B, D); batch_items: (P + G, D), the in-batch positives (P = B, or every rank's under
    torch.distributed, row ``offset + b`` user b's) then the shared negatives;
    row_items: (B, R, D); batch_idx: (P + G,) and row_idx: (B, R) catalog indices; row_valid: (B, R);
    log_count_*: log expected count of each candidate under the sampling mixture (B, P + G) / (B, R);
    log_weight_*: per-source weights as logit offsets (not applied to a row's own positive).
    Candidates equal to the row's positive are masked (accidental hits).
    """
    B = user.shape[0]
    rows = torch.arange(B, device=user.device)
    labels = rows + offset
    pos_idx = batch_idx[labels]
    offsets = log_weight_batch.unsqueeze(0).expand(B, -1).clone()  # (B, P + G)
    offsets[rows, labels] = 0.0
    logits_b = scores(user, batch_items) / temperature - logq_strength * log_count_batch + offsets  # (B, P + G)
    logits_r = (
        row_scores(user, row_items) / temperature - logq_strength * log_count_row + log_weight_row.unsqueeze(0)
    )  # (B, R)
    hit_b = batch_idx.unsqueeze(0) == pos_idx.unsqueeze(1)
    hit_b[rows, labels] = False
    low = torch.finfo(logits_b.dtype).min
    logits_b = logits_b.masked_fill(hit_b, low)
    logits_r = logits_r.masked_fill((row_idx == pos_idx.unsqueeze(1)) | ~row_valid, low)
    logits = torch.cat([logits_b, logits_r], dim=1)
    return _cross_entropy(logits, labels, label_smoothing)
