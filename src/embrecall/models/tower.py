"""One tower: per-feature embeddings -> concat -> MLP -> L2-normalised vector.

Inputs arrive as a dict of tensors keyed by feature name (see ``Encoders``):
categorical-like features (B,) int64, multi-valued and history (B, L) int64 with 0 padding,
standardised numbers (B,) float32, text embeddings (B, 384) float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from embrecall.config import (Feature, HistoryFeature, ItemIdFeature, ModelConfig, MultiFeature, NumericFeature,
                              TextFeature)
from embrecall.features.text import WIDTH as TEXT_WIDTH

__all__ = ["Tower"]


def _masked_mean(emb: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of (B, L, D) embeddings over the non-padding positions, optionally weighted by (L,)."""
    mask = (ids > 0).to(emb.dtype)  # (B, L)
    if weights is not None:
        mask = mask * weights.unsqueeze(0)
    total = mask.sum(dim=1, keepdim=True).clamp_min(1e-6)  # (B, 1)
    return (emb * mask.unsqueeze(-1)).sum(dim=1) / total  # (B, D)


class _History(nn.Module):
    """Recency-weighted mean of the last items, in the shared item-id table.

    Position p (0 = most recent) starts at weight decay**p; learned weights stay positive (softplus).
    """

    def __init__(self, f: HistoryFeature, table: nn.Embedding):
        super().__init__()
        self.table = table
        init = torch.tensor([f.decay ** p for p in range(f.max_len)], dtype=torch.float32)
        raw = torch.log(torch.expm1(init.clamp_min(1e-4)))  # inverse softplus
        self.position_logits = nn.Parameter(raw, requires_grad=f.learned_weights)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weights = F.softplus(self.position_logits[: ids.shape[1]])  # (L,)
        return _masked_mean(self.table(ids), ids, weights)


class _Multi(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(size, dim, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return _masked_mean(self.table(ids), ids)


class _Numeric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1)  # (B,) -> (B, 1)


class Tower(nn.Module):
    """Maps one side's feature dict to a (B, output_dim) unit vector."""

    def __init__(self, features: list[Feature], sizes: dict[str, int], item_table: nn.Embedding, cfg: ModelConfig):
        super().__init__()
        self.names = [f.name for f in features]
        self.inputs = nn.ModuleDict()
        width = 0
        for f in features:
            if isinstance(f, HistoryFeature):
                self.inputs[f.name] = _History(f, item_table)
                width += item_table.embedding_dim
            elif isinstance(f, ItemIdFeature):
                self.inputs[f.name] = item_table
                width += item_table.embedding_dim
            elif isinstance(f, MultiFeature):
                self.inputs[f.name] = _Multi(sizes[f.name], f.dim)
                width += f.dim
            elif isinstance(f, TextFeature):
                self.inputs[f.name] = nn.Linear(TEXT_WIDTH, f.dim)  # (B, 384) sentence embedding -> (B, dim)
                width += f.dim
            elif isinstance(f, NumericFeature) and sizes[f.name] == 0:
                self.inputs[f.name] = _Numeric()
                width += 1
            else:
                self.inputs[f.name] = nn.Embedding(sizes[f.name], f.dim, padding_idx=0)
                width += f.dim
        layers: list[nn.Module] = []
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        layers.append(nn.Linear(width, cfg.output_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.inputs[name](inputs[name]) for name in self.names]
        return F.normalize(self.mlp(torch.cat(parts, dim=-1)), dim=-1)  # (B, output_dim)
