"""The synthetic log's scenes and interest tags: shapes the scene and attention benchmarks rely on."""

from __future__ import annotations

import pandas as pd

from embrecall.config import SyntheticConfig
from embrecall.data.synthetic import generate


def test_scenes_have_a_small_one_and_their_own_popular_items():
    data = generate(SyntheticConfig(users=1500, items=600, events=40_000, scenes=4))
    share = data.events["scene"].value_counts(normalize=True)
    assert list(share.index) == ["s0", "s1", "s2", "s3"]  # largest first
    assert 0.02 < share["s3"] < 0.08 and share["s0"] > 0.5
    assert (data.events.groupby(["user_id", "timestamp"]).size() >= 1).all()
    top = {s: set(g["item_id"].value_counts().index[:20]) for s, g in data.events.groupby("scene")}
    assert len(top["s0"] & top["s1"]) < 10  # the scene changes what is clicked


def test_a_log_without_scenes_has_no_scene_column_and_interests_mix_favourites_with_noise():
    assert "scene" not in generate(SyntheticConfig()).events.columns
    users = generate(SyntheticConfig(users=200, interests=True)).users
    tags = users["interests"].str.split("|").explode()
    assert tags.str.startswith("c").groupby(level=0).any().all()  # every user has a favourite category
    assert tags.str.startswith("t").any() and pd.notna(users["interests"]).all()
