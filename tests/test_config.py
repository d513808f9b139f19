"""Config: one validated object, errors naming the field, overrides from the command line."""

from __future__ import annotations

import pytest

from embrecall.config import config_from_dict, load_config
from embrecall.errors import ConfigError


def test_defaults_are_the_demo():
    cfg = load_config()
    assert cfg.data.format == "synthetic" and cfg.model.output_dim == 64


def test_overrides_parse_types():
    cfg = load_config(None, ["train.epochs=3", "train.lr=0.01", "model.hidden=[64, 32]", "train.refit=false"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.hidden, cfg.train.refit) == (3, 0.01, [64, 32], False)


def test_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs: Input should be greater than or equal to 1 \(got 0\)"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"train\.optimiser: Extra inputs are not permitted"):
        load_config(None, ["train.optimiser=adam"])
    with pytest.raises(ConfigError, match=r"data.format = 'movielens' needs data.path"):
        load_config(None, ["data.format=movielens"])


def test_feature_spec_rules():
    with pytest.raises(ConfigError, match=r"kind 'item_id' belongs to the item tower"):
        load_config(None, ["features.user=[{kind: item_id}]"])
    with pytest.raises(ConfigError, match=r"duplicate feature names \['a'\]"):
        load_config(None, ["features.item=[{kind: categorical, name: a}, {kind: categorical, name: a}]"])


def test_toml_and_yaml_files(tmp_path):
    (tmp_path / "run.toml").write_text('[data]\nformat = "movielens"\npath = "ml"\n[train]\nepochs = 4\n')
    cfg = load_config(tmp_path / "run.toml")
    assert cfg.train.epochs == 4 and cfg.data.path == (tmp_path / "ml").resolve()
    (tmp_path / "run.yaml").write_text("train:\n  epochs: 5\n")
    assert load_config(tmp_path / "run.yaml").train.epochs == 5
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_sequence_heads_must_divide_the_item_embedding_width():
    with pytest.raises(ConfigError, match="heads \\(3\\) must divide model.item_embedding_dim \\(64\\)"):
        load_config(None, ["features.user=[{kind: sequence, heads: 3}]"])


@pytest.mark.parametrize(
    "setting",
    [
        "data.item_columns=[genre]",
        "data.user_columns=[age]",
        "data.header=false",
        "data.items={path: items.csv, key: item_id}",
    ],
)
def test_settings_the_movielens_reader_ignores_are_refused(setting):
    with pytest.raises(ConfigError, match=r"data.format = 'movielens' does not read data\.\w+"):
        load_config(None, ["data.format=movielens", "data.path=/somewhere", setting])


def test_a_dumped_config_with_every_default_written_loads_again():
    cfg = load_config(None, ["data.format=movielens", "data.path=/somewhere"])
    assert config_from_dict(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    "sets, unread",
    [
        (["train.loss=full_softmax", "train.logq_strength=0.5"], "logq_strength"),
        (["train.num_negatives=5"], "num_negatives"),
        (
            ["train.loss=bce", "train.label_smoothing=0.1", "train.negatives.global_count=8"],
            "negatives, train.label_smoothing",
        ),
    ],
)
def test_a_train_setting_the_loss_does_not_read_is_refused(sets, unread):
    with pytest.raises(ConfigError, match=rf"does not read train\.{unread}"):
        load_config(None, sets)


def test_tuning_the_loss_resets_what_the_trial_s_loss_does_not_read():
    from embrecall.tune import with_params

    raw = load_config(None, ["train.logq_strength=0.4"]).model_dump(mode="json")
    cfg = config_from_dict(with_params(raw, {"train.loss": "full_softmax", "train.logq_strength": 0.3}))
    assert cfg.train.loss == "full_softmax" and cfg.train.logq_strength == 1.0
    kept = config_from_dict(with_params(raw, {"train.loss": "sampled_softmax", "train.logq_strength": 0.3}))
    assert kept.train.logq_strength == 0.3
