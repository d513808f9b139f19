"""Losses: sampled softmax reduces to the full softmax, logQ and accidental hits act as intended."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from embrecall.training.losses import (
    bce_loss,
    mixed_softmax_loss,
    sampled_softmax_loss,
    softmax_loss,
)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(0, 1000))
def test_full_catalog_in_batch_with_zero_logq_equals_full_softmax(n, seed):
    gen = torch.Generator().manual_seed(seed)
    user = F.normalize(torch.randn(n, 8, generator=gen), dim=-1)
    items = F.normalize(torch.randn(n, 8, generator=gen), dim=-1)  # the batch holds every catalog item once
    ours = sampled_softmax_loss(user, items, torch.arange(n), torch.zeros(n), temperature=0.1)
    full = F.cross_entropy(user @ items.T / 0.1, torch.arange(n))
    torch.testing.assert_close(ours, full)


def test_logq_correction_subtracts_log_probability_per_column():
    user = torch.eye(2)
    items = torch.eye(2)
    log_q = torch.log(torch.tensor([0.9, 0.1]))
    ours = sampled_softmax_loss(user, items, torch.tensor([0, 1]), log_q, temperature=1.0)
    logits = torch.eye(2) - log_q.unsqueeze(0)
    torch.testing.assert_close(ours, F.cross_entropy(logits, torch.tensor([0, 1])))


def test_accidental_hits_are_not_negatives():
    # Rows 0 and 1 share item 7: without masking, each is the other's (identical) negative.
    user = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]), dim=-1)
    items = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    idx = torch.tensor([7, 7, 3])
    masked = sampled_softmax_loss(user, items, idx, torch.zeros(3), 0.1, remove_accidental_hits=True)
    unmasked = sampled_softmax_loss(user, items, idx, torch.zeros(3), 0.1, remove_accidental_hits=False)
    assert masked < unmasked
    logits = user @ items.T / 0.1
    logits[0, 1] = logits[1, 0] = torch.finfo(logits.dtype).min
    torch.testing.assert_close(masked, F.cross_entropy(logits, torch.arange(3)))


def test_bce_ignores_masked_negatives():
    user = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # the first "negative" is the positive itself
    masked = bce_loss(user, pos, neg, 1.0, neg_mask=torch.tensor([[False, True]]))
    expected = F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(0.0))
    torch.testing.assert_close(masked, expected)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 10), st.integers(3, 12), st.integers(0, 1000))
def test_full_softmax_equals_sampled_softmax_with_every_item_sampled_and_zero_correction(b, n, seed):
    """Mixed sampling whose shared negatives are the whole catalog and whose in-batch source has no
    weight: each item appears once per row (the positive's duplicate among the shared negatives is
    masked as an accidental hit), which is the full softmax."""
    gen = torch.Generator().manual_seed(seed)
    user = F.normalize(torch.randn(b, 8, generator=gen), dim=-1)
    catalog = F.normalize(torch.randn(n, 8, generator=gen), dim=-1)
    pos = torch.randint(0, n, (b,), generator=gen)
    full = softmax_loss(user, catalog, pos, torch.zeros(n), 0.1)
    batch_idx = torch.cat([pos, torch.arange(n)])
    zeros_b, no_rows = torch.zeros(b, b + n), torch.zeros(b, 0)
    sampled = mixed_softmax_loss(
        user,
        catalog[batch_idx],
        torch.zeros(b, 0, 8),
        batch_idx,
        torch.zeros(b, 0, dtype=torch.long),
        torch.zeros(b, 0, dtype=torch.bool),
        zeros_b,
        no_rows,
        torch.cat([torch.full((b,), -1e9), torch.zeros(n)]),
        torch.zeros(0),
        0.1,
    )
    torch.testing.assert_close(full, sampled)


def test_label_smoothing_spreads_over_live_candidates_only():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # both rows have the same item: one accidental hit each
    idx = torch.tensor([3, 3])
    smoothed = sampled_softmax_loss(user, items, idx, torch.zeros(2), 1.0, label_smoothing=0.2)
    assert torch.isfinite(smoothed)  # the masked column does not enter the smoothing term
    plain = sampled_softmax_loss(user, items, idx, torch.zeros(2), 1.0)
    torch.testing.assert_close(smoothed, plain)  # one live candidate per row: nothing to spread over
    full = softmax_loss(
        user,
        items[:1].repeat(3, 1) * torch.tensor([[1.0], [0.0], [-1.0]]),
        torch.tensor([0, 1]),
        torch.zeros(3),
        1.0,
        label_smoothing=0.3,
    )
    logits = user @ (items[:1].repeat(3, 1) * torch.tensor([[1.0], [0.0], [-1.0]])).T
    torch.testing.assert_close(full, F.cross_entropy(logits, torch.tensor([0, 1]), label_smoothing=0.3))
