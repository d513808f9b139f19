"""The sequence encoder: causal, trained on windows exactly as it is served, exported to ONNX unchanged."""

from __future__ import annotations

import numpy as np
import torch

from embrecall.data.load import load_dataset
from embrecall.data.split import split_dataset
from embrecall.features import Encoders
from embrecall.models.two_tower import TwoTower
from embrecall.training.examples import Examples
from tests.conftest import tiny_config

SEQUENCE = (
    "features.user=[{kind: categorical, name: user_id}, {kind: categorical, name: city, dim: 8}, "
    "{kind: sequence, name: recent, max_len: 6, layers: 2, heads: 2}]"
)


def _world(tmp_path, *extra):
    cfg = tiny_config(tmp_path, SEQUENCE, *extra)
    data = load_dataset(cfg)
    events = split_dataset(data, cfg.split).train
    enc = Encoders(cfg.features).fit(events, data.users, data.items)
    torch.manual_seed(0)
    model = TwoTower(cfg.features, enc, cfg.model).eval()
    return cfg, data, events, enc, model


def test_a_later_item_never_changes_an_earlier_state(tmp_path):
    *_, model = _world(tmp_path)
    seq = model.user_tower.inputs["recent"]
    ids = torch.tensor([[5, 4, 3, 2, 1, 0], [9, 8, 7, 0, 0, 0]])  # most recent first
    changed = ids.clone()
    changed[:, 0] = torch.tensor([11, 12])  # only the most recent item differs
    before, after = seq.states(ids), seq.states(changed)  # oldest first: the last state is the changed item's
    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_window_training_gives_each_target_its_served_vector(tmp_path):
    """One pass over a window yields, for every target, the vector the tower gives that event's
    own history (up to max_len items) when asked one row at a time, as serving asks."""
    cfg, data, events, enc, model = _world(tmp_path)
    ex = Examples(events, enc, data.users, data.items)
    starts = ex.units(windowed=True)[0][:40]
    with torch.no_grad():
        inputs, at, rows = ex.window_batch(starts)
        windowed = model.user(inputs, at)
        one_by_one = model.user(ex.user_batch(rows))
    counts = np.minimum(starts + 6, ex.user_end[starts]) - starts
    window_of = np.repeat(starts, counts)
    # A window starts its own history: only in a user's first window is every earlier item in view.
    first_window = ex.user_start[rows] == window_of
    assert first_window.sum() > 40 and (~first_window).any()
    torch.testing.assert_close(windowed[first_window], one_by_one[first_window], atol=1e-5, rtol=1e-4)


def test_onnx_user_tower_equals_pytorch_with_a_sequence_feature(tmp_path):
    from embrecall.export.onnx_runtime import OnnxTower
    from embrecall.training.onnx_export import export_tower

    cfg, data, events, enc, model = _world(tmp_path)
    ex = Examples(events, enc, data.users, data.items)
    rows = np.arange(0, len(ex), max(1, len(ex) // 50))
    inputs = {k: v.numpy() for k, v in ex.user_batch(rows).items()}
    export_tower(model.user_tower, {k: v[:4] for k, v in inputs.items()}, tmp_path / "user.onnx")
    with torch.no_grad():
        expected = model.user({k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()
    np.testing.assert_allclose(OnnxTower(tmp_path / "user.onnx")(inputs), expected, atol=1e-5)


def test_a_bundle_serves_what_training_measured(tmp_path):
    """Trained by windows, exported to ONNX, searched through the bundle: the same test metrics."""
    from embrecall.pipeline import evaluate, train

    cfg = tiny_config(tmp_path, SEQUENCE, "train.loss=full_softmax", "train.label_smoothing=0.1")
    report = train(cfg, show_progress=False)
    served = evaluate(cfg, ["two_tower"], bundle=report.bundle, show_progress=False)["two_tower"]
    for metric in ("HR@10", "HR@50", "NDCG@50"):
        assert abs(served[metric] - report.metrics["two_tower"][metric]) < 0.01, metric
