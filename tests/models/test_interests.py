"""A multi-interest user tower (model.interests): K vectors per user, trained on the best of them,
exported, each searched when served, and each item scored by its best interest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embrecall import train
from embrecall.config import load_config
from embrecall.errors import ConfigError
from embrecall.models.channel import UserQuery
from embrecall.serve.cache import VectorCache
from embrecall.serve.service import ServingVersion
from embrecall.training.losses import row_scores, scores
from tests.conftest import tiny_config


def test_a_user_scores_an_item_by_its_best_interest():
    user = torch.randn(4, 3, 8)
    items = torch.randn(5, 8)
    expected = torch.stack([torch.stack([(user[b] @ items[c]).max() for c in range(5)]) for b in range(4)])
    torch.testing.assert_close(scores(user, items), expected)
    torch.testing.assert_close(row_scores(user, items.expand(4, 5, 8)), expected)
    torch.testing.assert_close(scores(user[:, 0], items), user[:, 0] @ items.T)


def test_interests_need_a_pooled_history():
    with pytest.raises(ConfigError, match="model.interests"):
        load_config(None, ["model.interests=3", 'features.user=[{kind: "categorical", name: "user_id"}]'])


def test_a_multi_interest_bundle_serves_the_best_of_each_interest(tmp_path):
    cfg = tiny_config(tmp_path, "model.interests=3")
    report = train(cfg, show_progress=False)
    assert report.metrics["two_tower"]["HR@100"] > 0
    version = ServingVersion(report.bundle, VectorCache(size=0))
    user = str(version.bundle.users.index[0])
    query = UserQuery(user, version.history(user))
    vectors = version.tower.user_vectors([query])
    assert vectors.shape == (1, 3, cfg.model.output_dim)
    assert not np.allclose(vectors[0, 0], vectors[0, 1])  # the interests differ
    found = version.tower.recommend([query], 20, [set(query.history)])[0]
    assert len(found.item_ids) == len(set(found.item_ids)) == 20 and not set(found.item_ids) & set(query.history)
    best = (version.index.vectors(found.item_ids) @ vectors[0].T).max(axis=1)
    np.testing.assert_allclose(found.scores, best, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(found.scores) <= 1e-6)
    cached = ServingVersion(report.bundle, VectorCache(size=100))
    first = cached.tower.user_vectors([query])
    np.testing.assert_allclose(cached.tower.user_vectors([query]), first)  # from the cache, same shape
