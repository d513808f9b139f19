"""Tower inputs with a training-time behaviour: masked categorical values and attention pooling."""

from __future__ import annotations

import torch

from embrecall.models.tower import Categorical, _Multi


def test_a_masked_categorical_reads_some_values_as_unknown_while_training_only():
    torch.manual_seed(0)
    emb = Categorical(10, 4, mask_rate=0.3)
    ids = torch.tensor([5] * 1000 + [0] * 10)
    unknown, known = emb.weight[1], emb.weight[5]
    with torch.no_grad():
        trained, served = emb.train()(ids), emb.eval()(ids)
    as_unknown = (trained[:1000] == unknown).all(dim=1)
    assert 0.25 < as_unknown.float().mean() < 0.35  # about mask_rate of known values read as unknown
    assert (trained[:1000][~as_unknown] == known).all()
    assert (trained[1000:] == 0).all()  # padding stays padding
    assert (served[:1000] == known).all()


def test_attention_pooling_ignores_padding_and_weighs_values():
    torch.manual_seed(0)
    pool = _Multi(20, 8, "attention").eval()
    one = pool(torch.tensor([[3, 0, 0]]))
    torch.testing.assert_close(one, pool.table(torch.tensor([3])))  # a single value is itself
    empty = pool(torch.tensor([[0, 0, 0]]))
    assert torch.equal(empty, torch.zeros_like(empty))  # no values: zero, not NaN
    both = pool(torch.tensor([[3, 7, 0], [7, 3, 0]]))
    torch.testing.assert_close(both[0], both[1])  # order does not matter
    mean = (pool.table.weight[3] + pool.table.weight[7]) / 2
    assert not torch.allclose(both[0], mean)  # the weights are learned, not equal
