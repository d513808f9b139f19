"""The two-tower training loop: batches, loss, validation HR@K per epoch, early stopping, checkpoints."""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embrecall.config import Config, IndexConfig, SequenceFeature
from embrecall.data.log import EventLog
from embrecall.data.split import Split
from embrecall.evaluation.protocol import evaluate_channel
from embrecall.features import Encoders
from embrecall.features.profiles import UserProfiles
from embrecall.index.live import LiveIndex
from embrecall.index.protocol import filterable_columns
from embrecall.models.item2vec import Item2Vec  # gensim itself is imported only when it trains
from embrecall.models.tower_channel import TowerChannel
from embrecall.models.two_tower import TwoTower
from embrecall.progress import note, progress_bar
from embrecall.training.checkpoint import load_latest_checkpoint, save_checkpoint
from embrecall.training.device import training_device
from embrecall.training.distributed import (
    Ranks,
    agree,
    average_sparse_gradients,
    barrier,
    data_parallel,
    mean_over_ranks,
    ranks,
)
from embrecall.training.examples import Catalog, Examples
from embrecall.training.negatives import MixedNegatives
from embrecall.training.optimizer import Optimizer, make_optimizer
from embrecall.training.sources import FromParts, InMemory, Recent
from embrecall.training.step import Draws, StepLoss
from embrecall.training.threads import training_threads
from embrecall.training.warm_start import Parent

__all__ = ["FitResult", "fit_two_tower", "two_tower_channel", "item_vectors"]


@dataclass
class FitResult:
    model: TwoTower
    encoders: Encoders
    catalog: Catalog
    best_epoch: int
    log: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    optimizer: Optimizer | None = None  # its state goes into the bundle: an update trains on with it
    steps: int = 0  # optimiser steps taken
    pairs: int = 0  # training pairs seen (this rank's)


@torch.no_grad()
def item_vectors(model: TwoTower, catalog: Catalog, batch_size: int = 65_536) -> np.ndarray:
    """(n_items, D) item-tower vectors of the whole catalog, in item_idx order."""
    model.eval()
    n = len(catalog.item_counts)
    parts = [
        model.item(catalog.item_batch(np.arange(s, min(n, s + batch_size)))).cpu().numpy()
        for s in range(0, n, batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


def two_tower_channel(
    model: TwoTower,
    encoders: Encoders,
    users: pd.DataFrame | None,
    vectors: np.ndarray,
    index_cfg: IndexConfig | None = None,
    items: pd.DataFrame | None = None,
) -> TowerChannel:
    """The channel of a PyTorch model over a live index of its item vectors, as a bundle of it would
    serve them (exact search unless an index config is given; ``items``: attributes to filter on)."""

    def embed(inputs: dict[str, np.ndarray]) -> np.ndarray:
        model.eval()
        device = next(model.parameters()).device  # a model still training may be on a GPU
        with torch.no_grad():
            return model.user({k: torch.from_numpy(v).to(device) for k, v in inputs.items()}).cpu().numpy()

    index = LiveIndex(
        list(encoders.catalog), vectors, items, index_cfg or IndexConfig(kind="flat"), filterable_columns(items)
    )
    return TowerChannel(UserProfiles(encoders, users), embed, index, interests=model.user_tower.interest_count)


def pretrain_item_table(cfg: Config, model: TwoTower, encoders: Encoders, log: EventLog) -> int:
    """Fill the item-id table with item2vec vectors of the log (58.com's pre-trained word2vec
    item vectors), each scaled to the random start's typical length, and freeze it if asked.
    Items item2vec leaves out (rarer than its ``min_count``) keep their random start.  Returns how
    many items got a vector."""
    table = model.item_table.weight
    w2v = Item2Vec(cfg.channels.item2vec.model_copy(update={"dim": table.shape[1], "category_column": None}))
    ids, unit = w2v.fit(log).item_vectors()
    pos = encoders.positions(pd.Index(ids, dtype=object))
    keep = (pos >= 0) & (pos < encoders.n_trained_)
    with torch.no_grad():
        length = table[1:].norm(dim=1).mean()
        table[torch.from_numpy(pos[keep] + 1)] = torch.from_numpy(unit[keep]) * length
    table.requires_grad_(cfg.model.pretrained_items != "frozen")
    return int(keep.sum())


ESTIMATE_AFTER = 20  # batches timed before the first epoch's estimate is printed


def _estimate(label: str, steps: int, timed: int, seconds: float, epochs: int, valid_users: int | None) -> str:
    """One line before long work: what an epoch holds and, from the batches timed so far, what it costs."""
    per_epoch = seconds / timed * steps
    checks = f" plus a validation check of {valid_users:,} users" if valid_users else ""
    return (
        f"{label}: {steps:,} batches an epoch, about {per_epoch:,.0f} s each{checks} (timed on {timed} "
        f"batches); up to {epochs} epoch{'s' * (epochs > 1)}: about {per_epoch * epochs / 60:,.1f} min of training"
    )


def _source(
    cfg: Config,
    log: EventLog,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    exposures: pd.DataFrame | None,
    r: Ranks,
    parent: Parent | None = None,
) -> tuple[Encoders, InMemory | FromParts]:
    """The fitted encoders and where the examples come from: the whole log in memory, or its parts;
    from a ``parent``, its encoders grown by the log's and only its new events (and a replay)."""
    neg = cfg.train.negatives
    recent = None if parent is None else Recent(parent.until, cfg.update.replay)

    def grown(fresh: Encoders) -> Encoders:
        return fresh if parent is None else parent.encoders.grown(fresh)

    windowed = any(isinstance(f, SequenceFeature) for f in cfg.features.user)
    exposures = exposures if neg.exposure_count else None
    group_column = neg.hard_column if neg.hard_count else None
    events = log.whole()
    if events is None:
        counts = log.item_counts()
        encoders = grown(Encoders(cfg.features).fit_ids(counts.index, log.user_ids(), pd.DataFrame(), users, items))
        counts = counts.reindex(encoders.catalog).fillna(0)
        parts = FromParts(log, encoders, users, items, counts, r, recent, windowed, group_column)
        return encoders, parts
    encoders = grown(Encoders(cfg.features).fit(events, users, items))
    examples = Examples(events, encoders, users, items, exposures, group_column)
    return encoders, InMemory(examples, windowed, recent)


def fit_two_tower(
    cfg: Config,
    log: EventLog,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    *,
    epochs: int,
    validation: Split | None = None,
    checkpoint_dir: Path | None = None,
    show_progress: bool = True,
    label: str = "train",
    exposures: pd.DataFrame | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    parent: Parent | None = None,
) -> FitResult:
    """Fit on ``log`` (in memory, or sharded); with ``validation``, watch
    HR@early_stop_k on its validation targets each epoch, stop after ``patience`` epochs without
    gain and return the best epoch's weights.  ``on_epoch(epoch, score)`` hears each validation
    score (a tuner prunes poor trials with it).  With ``parent``, train on from that version:
    its weights and optimiser state, on the log's events after the parent's (``Recent``)."""
    t = cfg.train
    torch.manual_seed(t.seed)
    r = ranks()
    encoders, source = _source(cfg, log, users, items, exposures, r, parent)
    catalog = source.catalog
    has_exposures = exposures is not None and len(exposures) > 0
    mixed = MixedNegatives(t.negatives, catalog.item_counts, catalog.groups, has_exposures)
    model = TwoTower(cfg.features, encoders, cfg.model)
    show_progress = show_progress and r.main
    if cfg.model.pretrained_items != "none" and parent is None:
        found = pretrain_item_table(cfg, model, encoders, log)
        if show_progress:
            note(
                f"{label}: item2vec vectors for {found:,} of {encoders.n_trained_:,} items start the item table "
                f"({cfg.model.pretrained_items.replace('_', '-')})"
            )
    device = training_device(t.device)
    model.to(device)
    catalog.to(device)
    optimizer = make_optimizer(cfg, model)
    if parent is not None:
        parent.start(model, optimizer)
    result = FitResult(model, encoders, catalog, best_epoch=0, optimizer=optimizer)
    best_score, best_state, start_epoch = -1.0, None, 1
    if checkpoint_dir is not None and not t.resume:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # stale epochs must not be resumed later
    if t.resume and checkpoint_dir is not None:
        meta = load_latest_checkpoint(checkpoint_dir, model, optimizer)
        if meta is not None:
            start_epoch = meta["epoch"] + 1
            result.log, result.best_epoch, best_score = meta["log"], meta["best_epoch"], meta["best_score"]
            best_state = copy.deepcopy(model.state_dict()) if result.best_epoch == meta["epoch"] else None
    if validation is not None and t.valid_users is not None:
        validation = validation.sample_validation(t.valid_users, t.seed)
    metric = f"HR@{t.early_stop_k}"
    net = data_parallel(model) if r.world > 1 else model
    step_loss = StepLoss(t, net, r, source.windowed, mixed, catalog)
    threads_before = torch.get_num_threads()
    started = time.perf_counter()
    try:
        with progress_bar(show_progress) as bar:
            for epoch in range(start_epoch, epochs + 1):
                threads = training_threads(t.threads)
                torch.set_num_threads(threads)
                model.train()
                torch.manual_seed(t.seed + epoch)
                draws = Draws.of_epoch(t.seed, epoch, r)
                rng = np.random.default_rng(t.seed + epoch)
                steps, walk = source.epoch(rng, t.batch_size, r, t.steps_per_epoch)
                title = f"{label} epoch {epoch}/{epochs} ({threads} thread{'s' * (threads > 1)})"
                task = bar.add_task(title, total=steps, loss=float("nan"), rate=0.0)
                tick, total_loss, pairs = time.perf_counter(), 0.0, 0
                for b, (ex, step) in enumerate(walk):
                    loss, n_pairs = step_loss(ex, step, draws)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    average_sparse_gradients(model)
                    optimizer.step()
                    total_loss += loss.item()
                    pairs += n_pairs
                    result.steps += 1
                    result.pairs += n_pairs
                    rate = pairs / max(time.perf_counter() - tick, 1e-9)
                    bar.update(task, advance=1, loss=total_loss / (b + 1), rate=rate)
                    if show_progress and epoch == start_epoch and b == min(steps - 1, ESTIMATE_AFTER):
                        note(
                            _estimate(
                                label,
                                steps,
                                b + 1,
                                time.perf_counter() - tick,
                                epochs - start_epoch + 1,
                                None if validation is None else len(validation.valid),
                            )
                        )
                seconds = time.perf_counter() - tick
                entry = {
                    "epoch": epoch,
                    "loss": mean_over_ranks(total_loss / max(steps, 1)),
                    "seconds": seconds,
                    "pairs_per_s": pairs * r.world / max(seconds, 1e-9),
                }
                if validation is not None:  # rank 0 checks; every rank acts on its score
                    vectors = item_vectors(model, catalog) if r.main else None
                    channel = two_tower_channel(model, encoders, users, vectors) if vectors is not None else None
                    entry[metric] = agree(
                        evaluate_channel(channel, validation, [t.early_stop_k], on="valid")[metric]
                        if channel is not None
                        else None
                    )
                    bar.update(task, description=f"{title} valid {metric}={entry[metric]:.4f}")
                    if on_epoch is not None:
                        on_epoch(epoch, entry[metric])
                    if entry[metric] > best_score:
                        best_score, result.best_epoch = entry[metric], epoch
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    result.best_epoch, best_state = epoch, None  # without validation the last epoch is kept
                result.log.append(entry)
                if checkpoint_dir is not None and r.main:
                    save_checkpoint(
                        checkpoint_dir,
                        epoch,
                        model,
                        optimizer,
                        {"log": result.log, "best_epoch": result.best_epoch, "best_score": best_score},
                    )
                barrier()  # a rank resumed later finds the epoch every rank finished
                if validation is not None and epoch - result.best_epoch >= t.patience:
                    break
                spent = time.perf_counter() - started
                if (
                    validation is not None
                    and t.max_seconds
                    and epoch < epochs
                    and agree(spent + seconds > t.max_seconds)
                ):
                    note(
                        f"{label}: stopped after epoch {epoch} ({spent:.0f} s): another epoch would pass "
                        f"train.max_seconds = {t.max_seconds:g}"
                    )
                    break
    finally:
        torch.set_num_threads(threads_before)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.cpu().eval()  # what follows (export, evaluation, serving) runs on the CPU
    catalog.to(torch.device("cpu"))
    result.seconds = time.perf_counter() - started
    return result
