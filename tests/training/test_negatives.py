"""Each sampler draws the distribution it promises; the mixed loss reduces to the plain one."""

from __future__ import annotations

import numpy as np
import torch

from embrecall.config import NegativesConfig
from embrecall.training.losses import mixed_softmax_loss, sampled_softmax_loss
from embrecall.training.negatives import (
    ExposureSampler,
    GroupSampler,
    MixedNegatives,
    PopularitySampler,
)

COUNTS = np.array([100, 50, 25, 10, 5, 0, 1], dtype=float)


def _total_variation(draws: np.ndarray, expected: np.ndarray) -> float:
    observed = np.bincount(draws.reshape(-1), minlength=len(expected)) / draws.size
    return 0.5 * float(np.abs(observed - expected).sum())


def test_popularity_sampler_follows_counts_to_the_alpha():
    sampler = PopularitySampler(COUNTS, alpha=0.75)
    expected = COUNTS**0.75 / (COUNTS**0.75).sum()
    draws = sampler.draw(200_000, np.random.default_rng(0))
    assert _total_variation(draws, expected) < 0.01
    assert not (draws == 5).any()  # an item never seen in training is never drawn


def test_group_sampler_stays_in_the_positive_group_and_follows_popularity_there():
    groups = np.array([0, 1, 0, 1, 0, -1, 1])
    sampler = GroupSampler(groups, COUNTS, alpha=1.0)
    positives = np.zeros(50_000, dtype=np.int64) + 2  # item 2 is in group 0 = items {0, 2, 4}
    items, valid = sampler.draw(positives, 2, np.random.default_rng(1))
    assert valid.all() and set(np.unique(items)) <= {0, 2, 4}
    expected = np.array([100, 0, 25, 0, 5, 0, 0]) / 130
    assert _total_variation(items, expected) < 0.01
    np.testing.assert_allclose(sampler.prob(np.array([[0, 1, 4]]), np.array([2])), [[100 / 130, 0, 5 / 130]])
    _, valid = sampler.draw(np.array([5]), 3, np.random.default_rng(2))  # item 5 has no group
    assert not valid.any()


def test_exposure_sampler_is_uniform_over_each_users_shown_items():
    sampler = ExposureSampler(np.array([0, 3, 3, 4]), np.array([4, 5, 6, 1]))  # user 1 was shown nothing
    items, valid = sampler.draw(np.array([0] * 30_000 + [1, 2]), 1, np.random.default_rng(3))
    assert _total_variation(items[:30_000], np.array([0, 0, 0, 0, 1, 1, 1]) / 3) < 0.01
    assert valid[:30_000].all() and not valid[30_000] and valid[30_001] and items[30_001] == 1


def test_mixed_loss_without_extra_negatives_equals_in_batch_sampled_softmax():
    torch.manual_seed(0)
    B, D = 6, 8
    user = torch.nn.functional.normalize(torch.randn(B, D), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(B, D), dim=-1)
    idx = torch.tensor([0, 1, 2, 2, 3, 4])  # rows 2 and 3 share an item: an accidental hit
    counts = np.array([5.0, 4, 3, 2, 1])
    mixed = MixedNegatives(NegativesConfig(), counts, None, False)
    draw = mixed.draw(idx.numpy(), np.zeros(B, np.int64), np.random.default_rng(0))
    t = torch.from_numpy
    ours = mixed_softmax_loss(
        user,
        items,
        items.new_zeros((B, 0, D)),
        idx,
        t(draw.per_row),
        t(draw.valid),
        t(draw.log_count_batch),
        t(draw.log_count_row),
        t(draw.log_weight_batch),
        t(draw.log_weight_row),
        temperature=0.1,
    )
    log_q = torch.log(torch.from_numpy(counts / counts.sum())).float()[idx]
    torch.testing.assert_close(ours, sampled_softmax_loss(user, items, idx, log_q, 0.1))


def test_logq_of_the_mixture_adds_the_expected_counts_of_each_source():
    counts = np.array([6.0, 3, 1])
    cfg = NegativesConfig(global_count=4, global_alpha=1.0)
    mixed = MixedNegatives(cfg, counts, None, False)
    draw = mixed.draw(np.array([0, 1]), np.zeros(2, np.int64), np.random.default_rng(0))
    # candidate j in a batch of 2 with 4 global draws: expected count 2 * p(j) + 4 * p(j) = 6 * counts_j / 10
    expected = np.log(6 * counts[np.r_[[0, 1], draw.shared]] / 10)
    np.testing.assert_allclose(draw.log_count_batch[0], expected, rtol=1e-6)
