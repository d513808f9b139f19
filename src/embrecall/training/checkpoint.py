"""Per-epoch checkpoints without pickle: weights and optimiser tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from embrecall.errors import BundleError
from embrecall.training.optimizer import Optimizer

__all__ = ["save_checkpoint", "load_latest_checkpoint"]


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.contiguous()
            else:
                plain["state"].setdefault(str(pid), {})[name] = value
    return tensors, plain


def unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(vals) for pid, vals in plain["state"].items()}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    folder: Path, epoch: int, model: torch.nn.Module, optimizer: Optimizer, meta: dict[str, Any]
) -> Path:
    """Write ``epoch-NNN.model.safetensors``, ``.optim.safetensors`` and ``.json`` into ``folder``
    (the JSON last, so a checkpoint counts only once it is complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"epoch-{epoch:03d}"
    opt_tensors, opt_plain = flatten_optimizer(optimizer.state_dict())
    save_model(model, f"{stem}.model.safetensors")  # stores the shared item table once
    save_file(opt_tensors, f"{stem}.optim.safetensors")
    Path(f"{stem}.json").write_text(json.dumps({"epoch": epoch, "optimizer": opt_plain, **meta}))
    return Path(f"{stem}.model.safetensors")


def load_latest_checkpoint(folder: Path, model: torch.nn.Module, optimizer: Optimizer) -> dict[str, Any] | None:
    """Restore the newest checkpoint in ``folder`` into model and optimiser; its metadata, or None."""
    metas = sorted(folder.glob("epoch-*.json")) if folder.is_dir() else []
    if not metas:
        return None
    meta = json.loads(metas[-1].read_text())
    stem = metas[-1].with_suffix("")
    try:
        load_model(model, f"{stem}.model.safetensors")
    except RuntimeError as err:
        raise BundleError(
            f"checkpoint {stem} does not fit this model ({err}); delete {folder} or set train.resume = false"
        ) from None
    optimizer.load_state_dict(unflatten_optimizer(load_file(f"{stem}.optim.safetensors"), meta.pop("optimizer")))
    return meta
