"""``train.device``: auto takes a GPU only where PyTorch sees one; a GPU asked for and missing is
refused with the reason; under torchrun each rank takes the GPU of its LOCAL_RANK.  (No GPU was
lent to this project's checks: the CUDA path is exercised here with a stand-in device count.)"""

from __future__ import annotations

import pytest
import torch

from embrecall.config import load_config
from embrecall.errors import ConfigError
from embrecall.training.device import training_device


def test_auto_and_cpu_train_on_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto") == training_device("cpu") == torch.device("cpu")
    for asked in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=rf"train.device = '{asked}', but this PyTorch .* sees no GPU"):
            training_device(asked)


def test_a_rank_takes_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training_device("auto") == training_device("cuda") == torch.device("cuda", 1)
    assert training_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"has 2 GPU\(s\): cuda:0 to cuda:1"):
        training_device("cuda:2")


def test_a_device_setting_that_is_not_one_is_refused():
    assert load_config(None, ["train.device=cuda:1"]).train.device == "cuda:1"
    with pytest.raises(ConfigError, match=r"train.device: String should match pattern"):
        load_config(None, ["train.device=gpu"])
