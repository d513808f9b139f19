"""Training on from a version (``train --from``), and aligning a new version's space onto it.

Every full retrain lands in a new vector space (Jike's open problem: vectors of two versions
cannot be compared).  A warm start keeps the space close by construction: the parent's weights,
encoders and optimiser state carried into a model whose tables grew with the newer log (new rows
appended, none re-indexed).  A full retrain can instead be rotated onto the parent's space
(orthogonal Procrustes on the shared items' vectors), which changes no score within a version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file
from scipy.linalg import orthogonal_procrustes

from embrecall.config import Config, config_from_dict
from embrecall.errors import BundleError, ConfigError, EmbrecallError
from embrecall.export import Bundle
from embrecall.export.registry import Registry
from embrecall.features import Encoders
from embrecall.models.tower import Categorical
from embrecall.models.two_tower import TwoTower
from embrecall.training.checkpoint import flatten_optimizer, unflatten_optimizer
from embrecall.training.optimizer import Optimizer

__all__ = ["Parent", "version_folder", "OPTIMIZER_FILE", "save_optimizer", "align_onto", "ALIGN_ITEMS"]

OPTIMIZER_FILE = "optimizer.safetensors"
ALIGN_ITEMS = 20_000  # the parent's most frequent shared items the rotation is fitted on


def save_optimizer(optimizer: Optimizer, path: Path) -> None:
    """The optimiser state as safetensors, its plain part (groups, counters) as JSON metadata."""
    tensors, plain = flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(path), metadata={"plain": json.dumps(plain)})


def _grown(old: torch.Tensor, new: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """``old``'s values in ``new``'s shape: the rows a table gained keep ``new``'s values, or
    take ``fill`` (a categorical table's unknown row: a new user starts as the unknown user)."""
    if old.shape == new.shape:
        return old
    if old.dim() == 0 or old.shape[1:] != new.shape[1:] or old.shape[0] > new.shape[0]:
        raise ConfigError(f"a parent tensor of shape {tuple(old.shape)} cannot grow into {tuple(new.shape)}")
    out = new.clone()
    out[: old.shape[0]] = old
    if fill is not None:
        out[old.shape[0] :] = fill
    return out


def version_folder(path: Path | str) -> Path:
    """``path`` when it is a bundle; a registry's active version when it is a registry."""
    path = Path(path)
    if not (path / "manifest.json").is_file() and (path / "ACTIVE").is_file():
        active = Registry(path).active()
        if active is None:
            raise BundleError(f"registry {path} has no active version")
        return active
    return path


@dataclass
class Parent:
    """The version a fit trains on from: its settings, encoders, weights and optimiser state, and
    the newest event it saw (read from a bundle, or kept from a fit in memory)."""

    version: str
    config: Config
    encoders: Encoders
    weights: dict[str, torch.Tensor]  # the parent model's state dict
    optimizer: dict[str, Any] | None  # its optimiser's state dict (None: a fresh optimiser)
    until: int

    @classmethod
    def of(cls, path: Path | str) -> Parent:
        """The bundle at ``path``, or a registry's active version: its manifest and every file it
        lists checked against their hashes (and signature), then only what a fit needs read (no
        ONNX session, no user table)."""
        path = version_folder(path)
        manifest = Bundle.manifest_of(path)
        config = config_from_dict(manifest.get("config"), f"{path / 'manifest.json'} (config)")
        optimizer = None
        try:
            encoders = Encoders.from_json(config.features, json.loads((path / "encoders.json").read_text()))
            model = TwoTower(config.features, encoders, config.model)
            load_model(model, str(path / "weights.safetensors"))
            if OPTIMIZER_FILE in manifest["files"]:  # a file the manifest does not list is not read
                with safe_open(str(path / OPTIMIZER_FILE), framework="pt") as f:
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
                    optimizer = unflatten_optimizer(tensors, json.loads((f.metadata() or {})["plain"]))
        except (RuntimeError, KeyError, ValueError, EmbrecallError) as err:  # json's errors are ValueErrors
            raise BundleError(f"{path}: its weights or optimiser state cannot be trained on from ({err})") from None
        until = int(manifest.get("data", {}).get("until", 0))
        return cls(str(manifest["version"]), config, encoders, model.state_dict(), optimizer, until)

    def check(self, cfg: Config) -> None:
        """A warm start keeps the parent's inputs and shapes: refuse a config that changes them."""
        differ = [name for name in ("features", "model") if getattr(cfg, name) != getattr(self.config, name)]
        if differ:
            raise ConfigError(
                f"training on from version {self.version} keeps its {' and '.join(differ)} settings, and "
                "the config changes them; set them as the version's manifest has them, or train from scratch"
            )

    def start(self, model: TwoTower, optimizer: Optimizer) -> None:
        """Load the parent's weights and optimiser state into a model built on grown encoders:
        each table's known rows take the parent's values."""
        known = self.weights
        unknown_row = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, Categorical)}
        model.load_state_dict(
            {k: _grown(known[k], v, known[k][1] if k in unknown_row else None) for k, v in model.state_dict().items()}
        )
        if self.optimizer is None:
            return
        params = [p for part in optimizer.parts for g in part.param_groups for p in g["params"]]  # ids in order
        try:
            state = {
                pid: {
                    k: _grown(v, torch.zeros_like(params[pid])) if _moment(v, params[pid]) else v for k, v in st.items()
                }
                for pid, st in self.optimizer["state"].items()
            }
            optimizer.load_state_dict({**self.optimizer, "state": state})
        except (ValueError, KeyError, IndexError) as err:
            raise BundleError(f"version {self.version}: its optimiser state does not fit this model ({err})") from None

    def manifest_entry(self, events: int, steps: int) -> dict[str, Any]:
        """What the child's manifest says of its parent."""
        return {"version": self.version, "until": self.until, "events_seen": events, "steps": steps}


def _moment(value: Any, param: torch.Tensor) -> bool:
    """Whether an optimiser state value is per-parameter (it grows with its table)."""
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.dim() == param.dim()


@torch.no_grad()
def align_onto(model: TwoTower, vectors: np.ndarray, catalog: pd.Index, parent: Bundle) -> dict[str, float]:
    """Rotate both towers' outputs onto ``parent``'s space: the orthogonal R that best maps this
    model's ``vectors`` of shared items onto the parent's, folded into each tower's last layer
    (scores within the version are unchanged: (uR)·(vR) = u·v).  Returns the fit's figures."""
    theirs = parent.encoders.catalog
    shared = theirs[: parent.encoders.n_trained_].intersection(catalog, sort=False)[:ALIGN_ITEMS]
    if len(shared) < vectors.shape[1]:
        raise ConfigError(
            f"aligning onto version {parent.version} needs at least {vectors.shape[1]} shared items; "
            f"the versions share {len(shared)}"
        )
    mine = vectors[catalog.get_indexer(shared)].astype(np.float64)
    target = parent.item_vectors()[theirs.get_indexer(shared)].astype(np.float64)
    rotation, _ = orthogonal_procrustes(mine, target)
    r = torch.from_numpy(rotation).float()
    for tower in (model.user_tower, model.item_tower):
        last = cast(torch.nn.Linear, tower.mlp[-1])
        last.weight.copy_(r.T @ last.weight)  # rows of W are output dims: x W^T R = x (R^T W)^T
        last.bias.copy_(last.bias @ r)
    before = float(np.mean(np.sum(mine * target, axis=1)))
    after = float(np.mean(np.sum((mine @ rotation) * target, axis=1)))
    return {"items": float(len(shared)), "cosine_before": before, "cosine_after": after}
