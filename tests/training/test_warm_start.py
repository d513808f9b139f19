"""Training on from a version: vocabularies grown in place, the parent's rows carried over, new items
and users learned from one update, alignment that changes no score within a version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embrecall import load_config
from embrecall.config import Config
from embrecall.data.load import numeric_columns
from embrecall.data.shards import prepare_shards
from embrecall.data.table import read_feature_tables
from embrecall.errors import ConfigError, DataError
from embrecall.export import Bundle
from embrecall.features import Encoders
from embrecall.models.two_tower import TwoTower
from embrecall.pipeline import recommend, train
from embrecall.serve.drift import drift_report
from embrecall.training.examples import Catalog
from embrecall.training.sources import Recent
from embrecall.training.trainer import fit_two_tower, item_vectors
from embrecall.training.warm_start import Parent, align_onto
from tests.conftest import sharded_config

DAY = 86_400
CONFIG = """
out = "{out}"
[data]
format = "table"
path = "{log}"
[[features.user]]
kind = "categorical"
name = "user_id"
dim = 16
[[features.user]]
kind = "history"
name = "recent"
max_len = 10
[[features.item]]
kind = "item_id"
[model]
hidden = [32]
output_dim = 16
item_embedding_dim = 16
[train]
epochs = 3
batch_size = 128
refit = false
valid_users = 100
[update]
epochs = 4
replay = 1.0
"""


def clustered_log(users: int = 300, items: int = 120, days: int = 10, seed: int = 0) -> pd.DataFrame:
    """Users each keep to one of six item groups; two events per user per day."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        group = u % 6
        for day in range(days):
            for _ in range(2):
                item = group * (items // 6) + int(rng.integers(items // 6))
                rows.append((f"u{u}", f"i{item}", day * DAY + int(rng.integers(DAY))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def write_run(tmp_path: Path, events: pd.DataFrame, name: str, *sets: str) -> Config:
    log = tmp_path / f"{name}.csv"
    events.to_csv(log, index=False)
    toml = tmp_path / f"{name}.toml"
    toml.write_text(CONFIG.format(out=tmp_path / "runs", log=log))
    return load_config(toml, list(sets))


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A parent trained on days 0-7, and a log with days 8-9 added, where one new item ``fresh``
    is clicked by group 0's users and one new user ``newcomer`` shows up."""
    tmp = tmp_path_factory.mktemp("warm")
    log = clustered_log()
    first = log[log["timestamp"] < 8 * DAY]
    parent = train(write_run(tmp, first, "first"), show_progress=False).bundle
    later = log[log["timestamp"] >= 8 * DAY]
    fresh = later[later["user_id"].isin([f"u{u}" for u in range(0, 300, 6)])].copy()
    fresh["item_id"] = "fresh"
    fresh["timestamp"] += 1
    newcomer = pd.DataFrame({"user_id": "newcomer", "item_id": ["i1", "i2", "i3", "i4"], "timestamp": 9 * DAY})
    grown = pd.concat([log, fresh, newcomer], ignore_index=True)
    cfg = write_run(tmp, grown, "grown")
    child = train(cfg, show_progress=False, start_from=parent).bundle
    return {"parent": parent, "child": child, "cfg": cfg}


def test_grown_encoders_keep_every_known_position_and_append_new_ones() -> None:
    cfg = load_config(None, []).features
    first = pd.DataFrame({"user_id": ["b", "a"], "item_id": ["x", "y"], "timestamp": [1, 2]})
    users = pd.DataFrame({"city": ["p", "q", "r"]}, index=pd.Index(["a", "b", "c"], name="user_id"))
    items = pd.DataFrame(
        {"category": ["k", "k", "m"], "city": ["p", "p", "q"], "price": [1.0, 2.0, 3.0]},
        index=pd.Index(["x", "y", "z"], name="item_id"),
    )
    old = Encoders(cfg).fit(first, users, items)
    later = pd.DataFrame({"user_id": ["c", "a", "b"], "item_id": ["z", "x", "x"], "timestamp": [3, 4, 5]})
    grown = old.grown(Encoders(cfg).fit(pd.concat([first, later]), users, items))
    assert list(grown.catalog[: old.n_trained_]) == list(old.catalog[: old.n_trained_])
    assert list(grown.catalog) == [*old.catalog, "z"] and grown.n_trained_ == 3
    key = "user.user_id"
    assert grown.state_[key]["vocab"] == [*old.state_[key]["vocab"], "c"]  # the new user after the known ones


def test_an_update_starts_from_the_parents_rows_and_records_its_parent(versions: dict) -> None:
    parent, child = Bundle.load(versions["parent"]), Bundle.load(versions["child"])
    trained = child.manifest["training"]["parent"]
    assert trained["version"] == parent.version and trained["steps"] > 0
    assert trained["until"] == parent.manifest["data"]["until"]
    n = parent.encoders.n_trained_
    assert list(child.encoders.catalog[:n]) == list(parent.encoders.catalog[:n])
    assert (child.path / "optimizer.safetensors").is_file()
    # the spaces stay close by construction (two unaligned trainings: about 0)
    shared = parent.encoders.catalog[:n]
    old = parent.item_vectors()[parent.encoders.catalog.get_indexer(shared)]
    new = child.item_vectors()[child.encoders.catalog.get_indexer(shared)]
    assert float(np.mean(np.sum(old * new, axis=1))) > 0.5
    drift = drift_report(child.path, parent.path, users=50, items=50, k=20)
    assert drift["vector_cosine"] > 0.5 and drift["cross_top20_overlap"] > 0.5


def test_a_new_item_and_a_new_user_are_served_after_one_update(versions: dict) -> None:
    child = Bundle.load(versions["child"])
    position = int(child.encoders.positions(["fresh"])[0])
    assert 0 <= position < child.encoders.n_trained_  # an id row of its own, not an attribute-only item
    assert "newcomer" in child.encoders.state_["user.user_id"]["vocab"]
    # the newcomer (seen only in the new events) clicked group 0's items, where the new item is the
    # most clicked of the last days: the update learned both
    served = recommend(child, "newcomer", k=20)
    assert served.attrs["known_user"]
    assert "fresh" in set(served["item_id"])


def test_a_config_changing_the_parents_model_is_refused(versions: dict) -> None:
    cfg = versions["cfg"].model_copy(update={"model": versions["cfg"].model.model_copy(update={"output_dim": 8})})
    with pytest.raises(ConfigError, match="keeps its model settings"):
        train(cfg, show_progress=False, start_from=versions["parent"])


def test_an_update_without_new_events_says_so(versions: dict) -> None:
    with pytest.raises(DataError, match="nothing new"):
        train(versions["cfg"], show_progress=False, start_from=versions["child"])


def test_alignment_rotates_onto_the_parent_and_keeps_every_score_within_the_version(versions: dict) -> None:
    parent = Bundle.load(versions["parent"])
    cfg = parent.config
    model = TwoTower(cfg.features, parent.encoders, cfg.model)
    torch.manual_seed(1)
    for p in model.parameters():  # another training's space: the same shapes, other weights
        torch.nn.init.normal_(p, std=0.1)
    catalog = Catalog(parent.encoders, None, np.ones(parent.encoders.n_items))
    users = {"user_id": torch.arange(2, 12), "recent": torch.randint(0, 50, (10, 10))}
    before_users, before_items = model.user(users), torch.from_numpy(item_vectors(model, catalog))
    figures = align_onto(model, before_items.numpy(), parent.encoders.catalog, parent)
    after_users, after_items = model.user(users), torch.from_numpy(item_vectors(model, catalog))
    torch.testing.assert_close(after_users @ after_items.T, before_users @ before_items.T, atol=1e-5, rtol=1e-4)
    assert figures["cosine_after"] > figures["cosine_before"] + 0.3


def test_a_sharded_log_updates_on_its_new_events_and_their_replay(tmp_path: Path) -> None:
    cfg = sharded_config(tmp_path, "train.batch_size=64", "update.replay=0.5")
    log = prepare_shards(cfg).log("train_full")
    users, items = read_feature_tables(cfg.data, numeric_columns(cfg), [])
    fit = fit_two_tower(cfg, log, users, items, epochs=1, show_progress=False)
    times = np.concatenate([part["timestamp"].to_numpy() for part in log.parts(["timestamp"])])
    since = int(np.quantile(times, 0.8))
    assert fit.optimizer is not None
    parent = Parent("p", cfg, fit.encoders, fit.model.state_dict(), fit.optimizer.state_dict(), since)
    update = fit_two_tower(cfg, log, users, items, epochs=1, show_progress=False, parent=parent)
    walked = sum(Recent(since, 0.5).count(part["timestamp"].to_numpy()) // 64 for part in log.parts(["timestamp"]))
    assert update.steps == walked and 0 < update.pairs < 0.5 * len(times)  # the new fifth and half as many old
