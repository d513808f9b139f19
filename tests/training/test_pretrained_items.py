"""item2vec vectors start the item-id table: fine-tuned, or frozen through training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from embrecall.data.load import load_dataset
from embrecall.data.log import MemoryLog
from embrecall.data.split import split_dataset
from embrecall.models.item2vec import Item2Vec
from embrecall.training import trainer
from tests.conftest import tiny_config


def test_frozen_item2vec_vectors_start_and_stay_in_the_item_table(tmp_path, monkeypatch):
    cfg = tiny_config(
        tmp_path,
        "model.pretrained_items=frozen",
        "model.item_embedding_dim=16",
        "channels.item2vec.min_count=1",
        "channels.item2vec.epochs=2",
    )
    data = load_dataset(cfg)
    events = split_dataset(data, cfg.split).train
    started: list[torch.Tensor] = []
    original = trainer.pretrain_item_table

    def pretrain(*args):
        found = original(*args)
        started.append(args[1].item_table.weight.detach().clone())
        return found

    monkeypatch.setattr(trainer, "pretrain_item_table", pretrain)
    fit = trainer.fit_two_tower(cfg, MemoryLog(events), data.users, data.items, epochs=2, show_progress=False)
    table = fit.model.item_table.weight.detach()
    assert not fit.model.item_table.weight.requires_grad
    assert torch.equal(table, started[0])  # two epochs left it as item2vec set it
    # gensim trains on two threads (not bit-reproducible): another run's vectors point the same way
    ids, unit = Item2Vec(cfg.channels.item2vec.model_copy(update={"dim": 16})).fit(MemoryLog(events)).item_vectors()
    rows = fit.encoders.positions(pd.Index(ids, dtype=object)) + 1
    got = table.numpy()[rows] / np.linalg.norm(table.numpy()[rows], axis=1, keepdims=True)
    assert np.mean(np.sum(got * unit, axis=1)) > 0.9
    random_length = torch.nn.init.normal_(torch.empty(1000, 16), std=0.05).norm(dim=1).mean()
    assert abs(float(table[1:].norm(dim=1).mean() / random_length) - 1) < 0.1  # scaled to the random start
    assert torch.equal(table[0], torch.zeros(16))  # padding untouched


def test_fine_tuned_item2vec_vectors_move_with_training(tmp_path):
    cfg = tiny_config(
        tmp_path, "model.pretrained_items=fine_tune", "channels.item2vec.min_count=1", "channels.item2vec.epochs=2"
    )
    data = load_dataset(cfg)
    events = split_dataset(data, cfg.split).train
    one = trainer.fit_two_tower(cfg, MemoryLog(events), data.users, data.items, epochs=1, show_progress=False)
    two = trainer.fit_two_tower(cfg, MemoryLog(events), data.users, data.items, epochs=2, show_progress=False)
    assert one.model.item_table.weight.requires_grad
    assert not torch.allclose(one.model.item_table.weight, two.model.item_table.weight)
