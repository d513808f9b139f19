"""The trainer: validation-driven early stopping, and resuming from a checkpoint reproduces the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from embrecall.data.load import load_dataset
from embrecall.data.log import MemoryLog
from embrecall.data.split import split_dataset
from embrecall.training.trainer import fit_two_tower
from tests.conftest import tiny_config


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    cfg = tiny_config(tmp_path, "train.epochs=2")
    data = load_dataset(cfg)
    events = split_dataset(data, cfg.split).train
    straight = fit_two_tower(cfg, MemoryLog(events), data.users, data.items, epochs=2, show_progress=False)
    ckpt = tmp_path / "ckpt"
    fit_two_tower(cfg, MemoryLog(events), data.users, data.items, epochs=1, checkpoint_dir=ckpt, show_progress=False)
    resumed_cfg = tiny_config(tmp_path, "train.epochs=2", "train.resume=true")
    resumed = fit_two_tower(
        resumed_cfg, MemoryLog(events), data.users, data.items, epochs=2, checkpoint_dir=ckpt, show_progress=False
    )
    assert [e["epoch"] for e in resumed.log] == [1, 2]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resume")


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    cfg = tiny_config(tmp_path, "train.epochs=6", "train.patience=1")
    data = load_dataset(cfg)
    split = split_dataset(data, cfg.split)
    fit = fit_two_tower(
        cfg, MemoryLog(split.train), data.users, data.items, epochs=6, validation=split, show_progress=False
    )
    scores = [e["HR@50"] for e in fit.log]
    assert fit.best_epoch == 1 + int(np.argmax(scores))
    assert len(fit.log) == 6 or len(fit.log) - fit.best_epoch == 1  # stopped one epoch after the best


def test_mixed_negatives_with_impressions_train_and_beat_popularity(tmp_path):
    from embrecall.evaluation import evaluate_channel
    from embrecall.models.popular import Popular
    from embrecall.training.examples import Examples
    from embrecall.training.trainer import item_vectors, two_tower_channel

    cfg = tiny_config(
        tmp_path,
        "data.synthetic.impressions=2",
        "data.events=[click]",
        "data.exposure_events=[impression]",
        "train.epochs=3",
        "train.negatives.global_count=64",
        "train.negatives.hard_count=4",
        "train.negatives.hard_column=category",
        "train.negatives.exposure_count=2",
        "train.negatives.exposure_weight=2.0",
    )
    data = load_dataset(cfg)
    assert data.exposures is not None and set(data.exposures["event"]) == {"impression"}
    assert set(data.events["event"]) == {"click"}
    split = split_dataset(data, cfg.split)
    fit = fit_two_tower(
        cfg,
        MemoryLog(split.train_full),
        data.users,
        data.items,
        epochs=3,
        show_progress=False,
        exposures=data.exposures,
    )
    assert all(np.isfinite(e["loss"]) for e in fit.log)
    ex = Examples(split.train_full, fit.encoders, data.users, data.items)
    channel = two_tower_channel(fit.model, fit.encoders, data.users, item_vectors(fit.model, ex.catalog))
    ours = evaluate_channel(channel, split, [50])["HR@50"]
    assert ours > 1.2 * evaluate_channel(Popular().fit(MemoryLog(split.train_full)), split, [50])["HR@50"]


def test_runs_side_by_side_keep_their_own_checkpoints(tmp_path):
    """Two seeds started from one folder: each writes and clears only its own checkpoint folder."""
    from embrecall.pipeline import checkpoint_folder, train

    first, second = (tiny_config(tmp_path, f"train.seed={s}", "train.epochs=1") for s in (0, 1))
    assert checkpoint_folder(first) != checkpoint_folder(second)
    assert checkpoint_folder(first) == checkpoint_folder(
        first.model_copy(update={"train": first.train.model_copy(update={"resume": True})})
    )  # resume finds the same folder
    train(first, show_progress=False)
    kept = sorted(checkpoint_folder(first).rglob("*"))
    train(second, show_progress=False)
    assert kept and sorted(checkpoint_folder(first).rglob("*")) == kept


def test_a_wall_time_budget_stops_choosing_epochs(tmp_path):
    cfg = tiny_config(tmp_path, "train.epochs=6", "train.patience=6", "train.max_seconds=0.001")
    data = load_dataset(cfg)
    split = split_dataset(data, cfg.split)
    fit = fit_two_tower(
        cfg, MemoryLog(split.train), data.users, data.items, epochs=6, validation=split, show_progress=False
    )
    assert len(fit.log) == 1  # the first epoch runs; the next would pass the budget


def test_validation_users_are_a_fixed_sample():
    cfg = tiny_config(Path("/unused"))
    split = split_dataset(load_dataset(cfg), cfg.split)
    sample = split.sample_validation(100, seed=0)
    assert len(sample.valid) == 100 and sample.valid["user_id"].is_unique
    assert sample.valid.equals(split.sample_validation(100, seed=0).valid) and sample.test is split.test
    assert split.sample_validation(10**6, seed=0) is split
