"""embrecall tune: trials score on validation only, the study resumes, the best config loads."""

from __future__ import annotations

import optuna
import yaml

from embrecall.channel_table import CHANNELS
from embrecall.config import load_config
from embrecall.data.load import load_dataset
from embrecall.data.split import split_dataset
from embrecall.pipeline import evaluate, read_split
from embrecall.served_tuning import SHORTFALL, tune_served
from embrecall.tune import tune
from tests.conftest import tiny_config


def test_ease_study_writes_a_config_that_loads_and_resumes(tmp_path):
    cfg = tiny_config(tmp_path, "tune.channel=ease", "tune.trials=3", "channels.ease.l2=50")
    data = load_dataset(cfg)
    split = split_dataset(data, cfg.split)
    first = tune(cfg, data, split, tmp_path / "study", show_progress=False)
    assert first.trials == 3 and 0 < first.best_value <= 1
    best = load_config(first.config_path)
    assert best.channels.ease.l2 == first.best_params["channels.ease.l2"]
    again = tune(cfg, data, split, tmp_path / "study", show_progress=False)
    assert again.trials == 6  # the stored study went on
    trials = optuna.load_study(
        study_name="ease-NDCG@20", storage=f"sqlite:///{tmp_path / 'study' / 'tune.sqlite'}"
    ).trials
    assert trials[0].params["channels.ease.l2"] == 50  # the config as given was tried first


def test_test_targets_never_reach_a_trial(tmp_path, monkeypatch):
    """Every trial is scored on a view whose targets are the validation events."""
    import embrecall.tune as tuning

    cfg = tiny_config(tmp_path, "tune.trials=2", "train.epochs=2")
    data = load_dataset(cfg)
    split = split_dataset(data, cfg.split)
    seen = []
    real = tuning.evaluate_channel
    monkeypatch.setattr(tuning, "evaluate_channel", lambda ch, view, ks: seen.append(view) or real(ch, view, ks))
    result = tune(cfg, data, split, tmp_path / "tt", show_progress=False)
    assert result.trials == 2 and len(seen) == result.trials - result.pruned >= 1  # pruned trials score nothing
    for view in seen:
        assert view.test.equals(split.valid) and view.train_full.equals(split.train)


def test_an_unknown_metric_is_a_config_error():
    import pytest

    from embrecall.errors import ConfigError

    with pytest.raises(ConfigError, match="tune.metric"):
        load_config(None, ["tune.metric=AUC"])


def test_tune_served_is_never_below_the_best_single_channel_on_validation(tmp_path):
    cfg = tiny_config(tmp_path, "tune.trials=12", "channels.item2vec.min_count=1")
    data, split = read_split(cfg, show_progress=False)
    result = tune_served(cfg, data, split, tmp_path / "served", show_progress=False)
    table = yaml.safe_load((tmp_path / "served" / "served.yaml").read_text())["validation"]
    singles = {name: row for name, row in table.items() if name != "served"}
    assert set(singles) == set(CHANNELS)
    for metric in cfg.tune.served_metrics:
        best = max(row[metric] for row in singles.values())
        assert table["served"][metric] >= best * (1 - 1 / SHORTFALL / len(cfg.tune.served_metrics)), metric
    chosen = load_config(result.config_path)
    assert set(chosen.channels.serve) <= set(CHANNELS) and all(w > 0 for w in chosen.channels.serve.values())
    again = evaluate(chosen, ["served"], on="validation", show_progress=False)["served"]
    assert again["HR@100"] > 0


def test_tune_all_carries_each_channel_into_the_served_choice(tmp_path):
    from embrecall.tune_all import tune_all

    cfg = tiny_config(tmp_path, "tune.trials=2", "channels.ease.l2=50")
    data, split = read_split(cfg, show_progress=False)
    served, studies = tune_all(cfg, data, split, tmp_path / "all", ["ease", "itemcf"], show_progress=False)
    assert set(studies) == {"ease", "itemcf"} and all(s.trials == 2 for s in studies.values())
    chosen = load_config(served.config_path)
    assert chosen.channels.ease.l2 == load_config(studies["ease"].config_path).channels.ease.l2
    assert chosen.channels.itemcf == load_config(studies["itemcf"].config_path).channels.itemcf
