"""One contract for every channel: k distinct items, best first, never an excluded one,
k of them whenever k eligible items exist, each credited to a channel."""

from __future__ import annotations

import numpy as np
import pytest

from embrecall.channel_table import CHANNELS
from embrecall.data.load import load_dataset
from embrecall.data.split import split_dataset
from embrecall.evaluation import build_queries
from embrecall.models.dither import Dithered
from embrecall.pipeline import build_channel
from tests.conftest import tiny_config

NAMES = [*CHANNELS, "served"]  # every channel of the table, and their merge


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = tiny_config(
        tmp_path_factory.mktemp("contract"), "channels.item2vec.min_count=1", "channels.item2vec.epochs=3"
    )
    data = load_dataset(cfg)
    split = split_dataset(data, cfg.split)
    built: dict = {}
    channels = {n: build_channel(n, cfg, data, split, built=built, show_progress=False) for n in NAMES}
    channels["dithered"] = Dithered(channels["two_tower"], epsilon=2.0, seed=0)
    queries, exclude = build_queries(split.train_full, split.test.iloc[:40])
    return channels, queries, exclude


@pytest.mark.parametrize("name", NAMES + ["dithered"])
def test_channel_contract(world, name):
    channels, queries, exclude = world
    k = 25
    results = channels[name].recommend(queries, k, exclude)
    assert len(results) == len(queries)
    for c, ex in zip(results, exclude):
        assert len(c.item_ids) == len(set(c.item_ids)) == len(c.scores) == len(c.channels)
        assert not set(c.item_ids) & ex
        assert len(c.item_ids) == k  # every tiny-world user has far more than k eligible items
        assert all(ch in NAMES for ch in c.channels)
        if name not in ("dithered",):
            assert np.all(np.diff(c.scores) <= 1e-6)  # best first


@pytest.mark.parametrize("name", NAMES)
def test_no_exclusion_and_empty_batch(world, name):
    channels, queries, _ = world
    assert channels[name].recommend([], 5) == []
    assert len(channels[name].recommend(queries[:2], 5)[0].item_ids) == 5
