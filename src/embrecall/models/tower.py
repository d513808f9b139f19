"""One tower: per-feature embeddings -> concat -> MLP -> L2-normalised vector.

Inputs arrive as a dict of tensors keyed by feature name (see ``Encoders``):
categorical-like features (B,) int64, multi-valued and history (B, L) int64 with 0 padding
(histories most recent first), standardised numbers (B,) float32, text embeddings (B, 384) float32.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from embrecall.config import (
    CategoricalFeature,
    Feature,
    HistoryFeature,
    ItemIdFeature,
    ModelConfig,
    MultiFeature,
    NumericFeature,
    SequenceFeature,
    TextFeature,
)
from embrecall.features.text import WIDTH as TEXT_WIDTH

__all__ = ["Tower"]


def _masked_mean(emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean of (B, L, D) embeddings over the non-padding positions."""
    mask = (ids > 0).to(emb.dtype)  # (B, L)
    total = mask.sum(dim=1, keepdim=True).clamp_min(1e-6)  # (B, 1)
    return (emb * mask.unsqueeze(-1)).sum(dim=1) / total  # (B, D)


class _History(nn.Module):
    """Recency-weighted mean of the last items, in the shared item-id table.

    Position p (0 = most recent) starts at weight decay**p; learned weights stay positive (softplus).
    """

    def __init__(self, f: HistoryFeature, table: nn.Embedding):
        super().__init__()
        self.table = table
        init = torch.tensor([f.decay**p for p in range(f.max_len)], dtype=torch.float32)
        raw = torch.log(torch.expm1(init.clamp_min(1e-4)))  # inverse softplus
        self.position_logits = nn.Parameter(raw, requires_grad=f.learned_weights)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weights = F.softplus(self.position_logits[: ids.shape[1]]) * (ids > 0)  # (B, L)
        # One fused gather-and-sum: no (B, L, D) tensor, forward or backward (half the time of a bmm here).
        pooled = F.embedding_bag(
            ids, self.table.weight, per_sample_weights=weights, mode="sum", sparse=self.table.sparse
        )
        return pooled / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)  # (B, D)


class _Block(nn.Module):
    """Pre-norm causal self-attention and a position-wise feed-forward layer, each residual."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout  # the config checks that heads divide dim
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, L, D/H)
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ffn(self.norm2(x)))


class _Interests(nn.Module):
    """ComiRec-SA: K attention heads over the user's recent items, each a softmax over positions of
    ``w_k . tanh(W (e + p))``, so each head gathers one interest from the history as a weighted
    sum of its item embeddings.  (B, L) ids, most recent first -> (B, K, D); a user without
    history gets zero interests (the other features still place them)."""

    def __init__(self, table: nn.Embedding, max_len: int, interests: int):
        super().__init__()
        self.table = table
        dim = table.embedding_dim
        self.positions = nn.Embedding(max_len, dim)
        nn.init.normal_(self.positions.weight, std=0.05)
        self.attend = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, interests, bias=False))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.table(ids)  # (B, L, D)
        logits = self.attend(emb + self.positions.weight[: ids.shape[1]])  # (B, L, K)
        logits = logits.masked_fill((ids == 0).unsqueeze(-1), float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # (B, L, K)
        return torch.einsum("blk,bld->bkd", weights, emb)


class _Sequence(nn.Module):
    """Causal self-attention over the user's recent items (SASRec): the state at each position
    sees that item and the ones before it, never a later one.

    Takes (B, L) ids most recent first, as every history input; works oldest first, left-padded,
    so the last position is the most recent item.  Positions count from the oldest item in
    view, so a prefix seen in training sits where the same history sits when served.
    """

    def __init__(self, f: SequenceFeature, table: nn.Embedding):
        super().__init__()
        self.table = table
        dim = table.embedding_dim
        self.positions = nn.Embedding(f.max_len, dim)
        nn.init.normal_(self.positions.weight, std=0.05)
        self.drop = nn.Dropout(f.dropout)
        self.blocks = nn.ModuleList([_Block(dim, f.heads, f.dropout) for _ in range(f.layers)])
        self.norm = nn.LayerNorm(dim)

    def states(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D) states, oldest first (the last one is the most recent item's)."""
        ids = ids.flip(1)
        L = ids.shape[1]
        valid = ids > 0  # (B, L)
        first = L - valid.sum(dim=1, keepdim=True)  # left padding: index of the oldest item
        steps = torch.arange(L, device=ids.device)
        x = self.drop(self.table(ids) + self.positions((steps.unsqueeze(0) - first).clamp_min(0)))
        causal = steps.unsqueeze(0) <= steps.unsqueeze(1)  # (L query, L key)
        # Padding is never attended to, except by itself: a row of padding still gets finite output.
        allowed = (causal & valid.unsqueeze(1)) | torch.eye(L, dtype=torch.bool, device=ids.device)
        allowed = allowed.unsqueeze(1)  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.states(ids)[:, -1]  # (B, D): the user after the most recent item


class _Multi(nn.Module):
    """Mean of a multi-valued feature's embeddings, or an attention-weighted sum: each value's
    weight is a softmax over ``v . tanh(W e)`` of the values present, so the tower learns which
    tags speak for the user (a two-tower user side has no item to attend to, so the query is learned)."""

    def __init__(self, size: int, dim: int, pool: str, sparse: bool = False):
        super().__init__()
        self.table = nn.Embedding(size, dim, padding_idx=0, sparse=sparse)
        self.attention = (
            nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))
            if pool == "attention"
            else None
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.table(ids)  # (B, L, D)
        if self.attention is None:
            return _masked_mean(emb, ids)
        logits = self.attention(emb).squeeze(-1).masked_fill(ids == 0, float("-inf"))  # (B, L)
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # a row without values pools to zero
        return (weights.unsqueeze(-1) * emb).sum(dim=1)


class Categorical(nn.Embedding):
    """An id embedding that, while training, reads a ``mask_rate`` share of known values as
    unknown (row 1), so the unknown row holds the behaviour over all values."""

    def __init__(self, size: int, dim: int, mask_rate: float, sparse: bool = False):
        super().__init__(size, dim, padding_idx=0, sparse=sparse)
        self.mask_rate = mask_rate

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training and self.mask_rate > 0:
            ids = torch.where(
                (ids > 0) & (torch.rand(ids.shape, device=ids.device) < self.mask_rate), torch.ones_like(ids), ids
            )
        return super().forward(ids)


class _Numeric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1)  # (B,) -> (B, 1)


class Tower(nn.Module):
    """Maps one side's feature dict to a (B, output_dim) unit vector, or with ``interests`` > 1
    (the user side of ``model.interests``) to (B, interests, output_dim): the longest pooled
    history read as that many interests, each joined with the other features and passed
    through the MLP.  ``sparse``: its lookup tables give sparse gradients (``model.sparse_ids``)."""

    def __init__(
        self,
        features: list[Feature],
        sizes: dict[str, int],
        item_table: nn.Embedding,
        cfg: ModelConfig,
        sparse: bool = False,
        interests: int = 1,
    ):
        super().__init__()
        self.names = [f.name for f in features]
        histories = [f for f in features if isinstance(f, HistoryFeature) and f.max_len > 1]
        self.interest_source = max(histories, key=lambda f: f.max_len).name if interests > 1 and histories else None
        self.interest_count = interests if self.interest_source else 1
        self.sequence: str | None = None  # the SequenceFeature's name, if any
        self.inputs = nn.ModuleDict()
        width = 0
        for f in features:
            if isinstance(f, HistoryFeature) and f.name == self.interest_source:
                self.inputs[f.name] = _Interests(item_table, f.max_len, interests)
                width += item_table.embedding_dim
            elif isinstance(f, HistoryFeature):
                self.inputs[f.name] = _History(f, item_table)
                width += item_table.embedding_dim
            elif isinstance(f, SequenceFeature):
                self.inputs[f.name] = _Sequence(f, item_table)
                self.sequence = f.name
                width += item_table.embedding_dim
            elif isinstance(f, ItemIdFeature):
                self.inputs[f.name] = item_table
                width += item_table.embedding_dim
            elif isinstance(f, MultiFeature):
                self.inputs[f.name] = _Multi(sizes[f.name], f.dim, f.pool, sparse)
                width += f.dim
            elif isinstance(f, TextFeature):
                self.inputs[f.name] = nn.Linear(TEXT_WIDTH, f.dim)  # (B, 384) sentence embedding -> (B, dim)
                width += f.dim
            elif isinstance(f, CategoricalFeature):
                self.inputs[f.name] = Categorical(sizes[f.name], f.dim, f.mask_rate, sparse)
                width += f.dim
            elif isinstance(f, NumericFeature) and sizes[f.name] == 0:
                self.inputs[f.name] = _Numeric()
                width += 1
            else:
                self.inputs[f.name] = nn.Embedding(sizes[f.name], f.dim, padding_idx=0, sparse=sparse)
                width += f.dim
        layers: list[nn.Module] = []
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        layers.append(nn.Linear(width, cfg.output_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, inputs: dict[str, torch.Tensor], at: torch.Tensor | None = None) -> torch.Tensor:
        """(B, output_dim) vectors, or (B, interests, output_dim).  ``at``: training by windows, the
        sequence input is (W, L) and ``at`` (B,) picks which flat position of its (W * L) states
        each output row uses."""
        parts = []
        for name in self.names:
            if name == self.sequence and at is not None:
                states = cast(_Sequence, self.inputs[name]).states(inputs[name])
                parts.append(states.reshape(-1, states.shape[-1])[at])
            else:
                encode: nn.Module = self.inputs[name]
                parts.append(encode(inputs[name]))
        if self.interest_source is not None:  # every other part joins each interest
            many = parts[self.names.index(self.interest_source)]  # (B, K, D)
            parts = [p if p.dim() == 3 else p.unsqueeze(1).expand(-1, many.shape[1], -1) for p in parts]
        return F.normalize(self.mlp(torch.cat(parts, dim=-1)), dim=-1)  # (B, [K,] output_dim)
