"""The two-tower training loop: batches, loss, validation HR@K per epoch, early stopping, checkpoints."""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embrecall.config import Config, IndexConfig
from embrecall.data.split import Split
from embrecall.evaluate.protocol import evaluate_channel
from embrecall.features import Encoders
from embrecall.index import FaissIndex
from embrecall.models.embedding_channel import EmbeddingChannel
from embrecall.models.two_tower import TwoTower
from embrecall.progress import progress_bar
from embrecall.train.checkpoint import load_latest_checkpoint, save_checkpoint
from embrecall.train.examples import Examples
from embrecall.train.losses import bce_loss, mixed_softmax_loss, sampled_softmax_loss
from embrecall.train.negatives import MixedNegatives

__all__ = ["FitResult", "fit_two_tower", "two_tower_channel", "item_vectors"]


@dataclass
class FitResult:
    model: TwoTower
    encoders: Encoders
    best_epoch: int
    log: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    t = cfg.train
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
             "adagrad": torch.optim.Adagrad}
    return kinds[t.optimizer](params, lr=t.lr, weight_decay=t.weight_decay)


@torch.no_grad()
def item_vectors(model: TwoTower, examples: Examples, batch_size: int = 65_536) -> np.ndarray:
    """(n_items, D) item-tower vectors of the whole catalog, in item_idx order."""
    model.eval()
    n = len(next(iter(examples.item_inputs.values())))
    parts = [model.item(examples.item_batch(np.arange(s, min(n, s + batch_size)))).numpy()
             for s in range(0, n, batch_size)]
    return np.concatenate(parts).astype(np.float32)


def two_tower_channel(model: TwoTower, encoders: Encoders, users: pd.DataFrame | None, vectors: np.ndarray,
                      index_cfg: IndexConfig | None = None) -> EmbeddingChannel:
    """The in-memory channel of a PyTorch model (exact search unless an index config is given)."""
    def embed(inputs: dict[str, np.ndarray]) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model.user({k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()

    index = FaissIndex.build(vectors, index_cfg or IndexConfig(kind="flat"))
    return EmbeddingChannel("two_tower", encoders, users, embed, index)


def _mixed_loss(cfg: Config, model: TwoTower, ex: Examples, rows: np.ndarray, user: torch.Tensor,
                mixed: MixedNegatives, rng: np.random.Generator) -> torch.Tensor:
    pos_idx = ex.item_idx[rows]
    draw = mixed.draw(pos_idx, ex.user_code[rows], rng)
    batch_idx = np.r_[pos_idx, draw.shared]
    batch_items = model.item(ex.item_batch(batch_idx))  # (B + G, D)
    B, R = draw.per_row.shape
    row_items = (model.item(ex.item_batch(draw.per_row.reshape(-1))).view(B, R, -1) if R
                 else batch_items.new_zeros((B, 0, batch_items.shape[1])))
    t = torch.from_numpy
    return mixed_softmax_loss(user, batch_items, row_items, t(batch_idx), t(draw.per_row), t(draw.valid),
                              t(draw.log_count_batch), t(draw.log_count_row), t(draw.log_weight_batch),
                              t(draw.log_weight_row), cfg.train.temperature, cfg.train.logq_strength)


def _batch_loss(cfg: Config, model: TwoTower, ex: Examples, rows: np.ndarray, gen: torch.Generator,
                mixed: MixedNegatives, rng: np.random.Generator) -> torch.Tensor:
    t = cfg.train
    user = model.user(ex.user_batch(rows))  # (B, D)
    if t.loss == "sampled_softmax" and mixed.active:
        return _mixed_loss(cfg, model, ex, rows, user, mixed, rng)
    pos_idx = ex.item_idx[rows]
    pos = model.item(ex.item_batch(pos_idx))  # (B, D)
    if t.loss == "sampled_softmax":
        idx = torch.from_numpy(pos_idx)
        return sampled_softmax_loss(user, pos, idx, ex.log_q[idx] * t.logq_strength, t.temperature,
                                    t.remove_accidental_hits)
    weights = torch.from_numpy(ex.item_counts ** t.negative_alpha).float()
    neg_idx = torch.multinomial(weights, len(rows) * t.num_negatives, replacement=True, generator=gen)
    neg_idx = neg_idx.view(len(rows), t.num_negatives)  # (B, N)
    neg = model.item(ex.item_batch(neg_idx.reshape(-1).numpy())).view(len(rows), t.num_negatives, -1)
    return bce_loss(user, pos, neg, t.temperature, neg_mask=neg_idx != torch.from_numpy(pos_idx)[:, None])


def fit_two_tower(cfg: Config, events: pd.DataFrame, users: pd.DataFrame | None, items: pd.DataFrame | None, *,
                  epochs: int, validation: Split | None = None, checkpoint_dir: Path | None = None,
                  show_progress: bool = True, label: str = "train",
                  exposures: pd.DataFrame | None = None) -> FitResult:
    """Fit on ``events``; with ``validation``, watch HR@early_stop_k on its validation targets each
    epoch, stop after ``patience`` epochs without gain and return the best epoch's weights."""
    t = cfg.train
    torch.manual_seed(t.seed)
    encoders = Encoders(cfg.features).fit(events, users, items)
    neg = t.negatives
    examples = Examples(events, encoders, users, items, exposures if neg.exposure_count else None,
                        neg.hard_column if neg.hard_count else None)
    mixed = MixedNegatives(neg, examples.item_counts, examples.groups, examples.exposure)
    model = TwoTower(cfg.features, encoders, cfg.model)
    optimizer = _optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    result = FitResult(model, encoders, best_epoch=0)
    best_score, best_state, start_epoch = -1.0, None, 1
    if checkpoint_dir is not None and not t.resume:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # stale epochs must not be resumed later
    if t.resume and checkpoint_dir is not None:
        meta = load_latest_checkpoint(checkpoint_dir, model, optimizer)
        if meta is not None:
            start_epoch = meta["epoch"] + 1
            result.log, result.best_epoch, best_score = meta["log"], meta["best_epoch"], meta["best_score"]
            best_state = copy.deepcopy(model.state_dict()) if result.best_epoch == meta["epoch"] else None
    metric = f"HR@{t.early_stop_k}"
    started = time.perf_counter()
    n_batches = (len(examples) + t.batch_size - 1) // t.batch_size
    with progress_bar(show_progress) as bar:
        for epoch in range(start_epoch, epochs + 1):
            model.train()
            torch.manual_seed(t.seed + epoch)
            gen = torch.Generator().manual_seed(t.seed + epoch)
            neg_rng = np.random.default_rng([t.seed, epoch])
            order = np.random.default_rng(t.seed + epoch).permutation(len(examples))
            task = bar.add_task(f"{label} epoch {epoch}/{epochs}", total=n_batches, loss=float("nan"), rate=0.0)
            tick, total_loss = time.perf_counter(), 0.0
            for b in range(n_batches):
                rows = order[b * t.batch_size:(b + 1) * t.batch_size]
                loss = _batch_loss(cfg, model, examples, rows, gen, mixed, neg_rng)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item()
                rate = (b + 1) * t.batch_size / max(time.perf_counter() - tick, 1e-9)
                bar.update(task, advance=1, loss=total_loss / (b + 1), rate=rate)
            entry = {"epoch": epoch, "loss": total_loss / max(n_batches, 1),
                     "seconds": time.perf_counter() - tick}
            if validation is not None:
                channel = two_tower_channel(model, encoders, users, item_vectors(model, examples))
                entry[metric] = evaluate_channel(channel, validation, [t.early_stop_k], on="valid")[metric]
                bar.update(task, description=f"{label} epoch {epoch}/{epochs} valid {metric}={entry[metric]:.4f}")
                if entry[metric] > best_score:
                    best_score, result.best_epoch = entry[metric], epoch
                    best_state = copy.deepcopy(model.state_dict())
            else:
                result.best_epoch, best_state = epoch, None  # without validation the last epoch is kept
            result.log.append(entry)
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, epoch, model, optimizer,
                                {"log": result.log, "best_epoch": result.best_epoch, "best_score": best_score})
            if validation is not None and epoch - result.best_epoch >= t.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
