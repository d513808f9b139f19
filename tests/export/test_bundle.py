"""Bundles: ONNX towers match PyTorch, the bundle reloads and answers, damage is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embrecall.errors import BundleError
from embrecall.export import Bundle
from embrecall.pipeline import recommend, train
from embrecall.training.examples import Examples
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("bundle"))
    return cfg, train(cfg, show_progress=False)


def test_onnx_towers_match_pytorch(trained):
    cfg, report = trained
    bundle = Bundle.load(report.bundle)
    from safetensors.torch import load_model

    from embrecall.data.load import load_dataset
    from embrecall.data.split import split_dataset
    from embrecall.models.two_tower import TwoTower

    model = TwoTower(cfg.features, bundle.encoders, cfg.model)
    load_model(model, str(report.bundle / "weights.safetensors"))
    model.eval()
    data = load_dataset(cfg)
    split = split_dataset(data, cfg.split)
    ex = Examples(split.train_full, bundle.encoders, data.users, data.items)
    rows = np.arange(0, len(ex), 7)
    user_in = {k: v.numpy() for k, v in ex.user_batch(rows).items()}
    item_in = {k: v.numpy() for k, v in ex.catalog.item_batch(np.arange(bundle.encoders.n_items)).items()}
    with torch.no_grad():
        torch_user = model.user({k: torch.from_numpy(v) for k, v in user_in.items()}).numpy()
        torch_item = model.item({k: torch.from_numpy(v) for k, v in item_in.items()}).numpy()
    assert np.abs(bundle.user_tower(user_in) - torch_user).max() < 1e-5
    assert np.abs(bundle.item_tower(item_in) - torch_item).max() < 1e-5
    assert np.abs(bundle.item_vectors() - torch_item).max() < 1e-5  # the indexed vectors are the tower's


def test_manifest_records_version_config_data_and_metrics(trained):
    cfg, report = trained
    manifest = json.loads((report.bundle / "manifest.json").read_text())
    assert manifest["version"] == report.bundle.name
    assert manifest["config"]["train"]["epochs"] == 2
    assert len(manifest["data"]["fingerprint"]) == 16
    assert set(manifest["metrics"]) == {"two_tower", "served", "popular"}  # served: two_tower and popular merged
    assert manifest["metrics"] == json.loads(json.dumps(report.metrics))


def test_recommend_excludes_seen_items_and_shows_attributes(trained):
    _, report = trained
    bundle = Bundle.load(report.bundle)
    user = bundle.users.index[0]
    recs = recommend(bundle, user, k=15)
    assert len(recs) == 15
    assert not set(recs["item_id"]) & set(bundle.users.at[user, "items"])
    assert {"title", "category"} <= set(recs.columns)
    for _, found in recs.groupby("channel"):  # scores compare within a channel: each list best first
        assert list(found["score"]) == sorted(found["score"], reverse=True)


def test_damaged_or_incomplete_bundle_is_refused(trained, tmp_path):
    import shutil

    _, report = trained
    copy = tmp_path / "copy"
    shutil.copytree(report.bundle, copy)
    with (copy / "items.parquet").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(BundleError, match="items.parquet does not match the hash"):
        Bundle.load(copy)
    (copy / "index.faiss").unlink()
    with pytest.raises(BundleError, match="index.faiss is missing"):
        Bundle.load(copy, verify=False)
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.load(tmp_path)


def test_no_half_written_bundle_is_left_behind(trained):
    cfg, report = trained
    assert not [p for p in report.bundle.parent.iterdir() if p.name.startswith(".tmp-")]


def test_a_live_index_is_filled_from_the_bundles_file_a_block_at_a_time(trained, monkeypatch):
    from embrecall.index import live
    from embrecall.index.live import LiveIndex

    _, report = trained
    bundle = Bundle.load(report.bundle)
    rows, whole = bundle.vector_rows(), bundle.item_vectors()
    assert rows.shape == whole.shape and np.array_equal(rows[3:9], whole[3:9])
    monkeypatch.setattr(live, "FILL_ROWS", 7)  # many blocks, the last one short
    index = LiveIndex(list(bundle.encoders.catalog), rows, None, bundle.config.index)
    np.testing.assert_array_equal(index.vectors(list(bundle.encoders.catalog)), whole)
