"""The two-tower (DSSM) model: a user tower and an item tower sharing one item-id table.

The model returns embeddings; scoring and losses live in ``embrecall.training.losses``.
"""

from __future__ import annotations

import torch
from torch import nn

from embrecall.config import FeaturesConfig, ModelConfig
from embrecall.features import Encoders
from embrecall.models.tower import Tower

__all__ = ["TwoTower"]


# Lookup-table rows above which ``model.sparse_ids`` (unset) turns sparse gradients on: below, a
# dense Adam step over every row is cheap; at a million rows it costs most of a step.
SPARSE_ABOVE = 1_000_000


class TwoTower(nn.Module):
    def __init__(self, spec: FeaturesConfig, encoders: Encoders, cfg: ModelConfig):
        super().__init__()
        user_sizes = {f.name: encoders.input_size("user", f) for f in spec.user}
        item_sizes = {f.name: encoders.input_size("item", f) for f in spec.item}
        rows = encoders.n_trained_ + 1 + sum(user_sizes.values()) + sum(item_sizes.values())
        self.sparse = cfg.sparse_ids if cfg.sparse_ids is not None else rows > SPARSE_ABOVE
        self.item_table = nn.Embedding(
            encoders.n_trained_ + 1, cfg.item_embedding_dim, padding_idx=0, sparse=self.sparse
        )
        nn.init.normal_(self.item_table.weight, std=0.05)
        with torch.no_grad():
            self.item_table.weight[0].zero_()
        self.user_tower = Tower(list(spec.user), user_sizes, self.item_table, cfg, self.sparse, cfg.interests)
        self.item_tower = Tower(list(spec.item), item_sizes, self.item_table, cfg, self.sparse)

    def user(self, inputs: dict[str, torch.Tensor], at: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_tower(inputs, at)  # (B, D), or (B, K, D) with model.interests = K

    def item(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.item_tower(inputs)  # (B, D)

    def forward(
        self, users: dict[str, torch.Tensor], items: dict[str, torch.Tensor], at: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both towers at once (``at``: sequence positions, as ``Tower.forward`` takes them): the
        call ``DistributedDataParallel`` wraps (it syncs gradients of what its forward computed)."""
        return self.user(users, at), self.item(items)
