"""Where training runs: ``train.device`` (auto / cpu / cuda / cuda:N) as a torch device.

``auto`` takes a GPU when this PyTorch sees one and the CPU otherwise; under torchrun a rank
takes the GPU of its ``LOCAL_RANK`` (one process per GPU, as torchrun starts them)."""

from __future__ import annotations

import os

import torch

from embrecall.errors import ConfigError

__all__ = ["training_device"]


def training_device(setting: str) -> torch.device:
    """The device ``setting`` names on this machine; a GPU asked for and not there is refused."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"train.device = '{setting}', but this PyTorch ({torch.__version__}, CUDA "
            f"{torch.version.cuda or 'not built in'}) sees no GPU; set train.device = 'auto' or 'cpu'"
        )
    count = torch.cuda.device_count()
    index = int(setting.split(":")[1]) if ":" in setting else int(os.environ.get("LOCAL_RANK", "0")) % count
    if index >= count:
        raise ConfigError(
            f"train.device = '{setting}', but this machine has {count} GPU(s): cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)
