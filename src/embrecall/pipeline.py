"""The Python API: the same steps the CLI runs — train a bundle, evaluate channels, recommend.

    >>> from embrecall import load_config, train, recommend
    >>> report = train(load_config("configs/ml100k.toml"))
    >>> recommend(report.bundle, "196", k=10)
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from embrecall.config import Config
from embrecall.data import Dataset, Split, load_dataset, split_dataset
from embrecall.errors import ConfigError
from embrecall.evaluate import evaluate_channel
from embrecall.export import Bundle, write_bundle
from embrecall.models.popular import Popular
from embrecall.progress import note, step
from embrecall.train.examples import Examples
from embrecall.train.trainer import FitResult, fit_two_tower, item_vectors, two_tower_channel

__all__ = ["TrainReport", "train", "evaluate", "recommend", "CHANNELS"]

CHANNELS = ("two_tower", "popular")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class TrainReport:
    bundle: Path
    metrics: dict[str, dict[str, float]]
    best_epoch: int
    log: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _read(cfg: Config, show_progress: bool) -> tuple[Dataset, Split]:
    with step(f"reading {cfg.data.format} data and splitting ({cfg.split.kind})", show_progress):
        data = load_dataset(cfg)
        split = split_dataset(data, cfg.split)
    for text in data.notes:
        note(text)
    return data, split


def _fit_protocol(cfg: Config, data: Dataset, split: Split, show_progress: bool) -> tuple[FitResult, float]:
    """Choose the epoch count on validation, then (with ``train.refit``) fit train + validation for it."""
    started = time.perf_counter()
    ckpt = cfg.out / "checkpoints"
    has_valid = len(split.valid) > 0
    selected = fit_two_tower(cfg, split.train, data.users, data.items, epochs=cfg.train.epochs,
                             validation=split if has_valid else None, checkpoint_dir=ckpt / "select",
                             show_progress=show_progress, label="select")
    final = selected
    if cfg.train.refit and has_valid:
        final = fit_two_tower(cfg, split.train_full, data.users, data.items, epochs=selected.best_epoch,
                              checkpoint_dir=ckpt / "final", show_progress=show_progress, label="final")
        final.log = selected.log + [{**e, "phase_final": 1.0} for e in final.log]
        final.best_epoch = selected.best_epoch
    return final, time.perf_counter() - started


def train(cfg: Config, *, show_progress: bool = True) -> TrainReport:
    """Read the data, fit the two-tower model under the protocol, evaluate it and popularity on
    the test targets, and write a bundle under ``cfg.out``.  The bundle's model is the one
    the metrics describe: trained on train + validation, never on test events."""
    data, split = _read(cfg, show_progress)
    fit, seconds = _fit_protocol(cfg, data, split, show_progress)
    history = split.train_full if cfg.train.refit else split.train
    metrics: dict[str, dict[str, float]] = {}
    with step("embedding the catalog and evaluating on test", show_progress):
        vectors = item_vectors(fit.model, Examples(history, fit.encoders, data.users, data.items))
        if len(split.test):
            channel = two_tower_channel(fit.model, fit.encoders, data.users, vectors, cfg.index)
            metrics["two_tower"] = {**evaluate_channel(channel, split, cfg.evaluate.ks),
                                    "train_seconds": seconds, "peak_rss_mb": peak_rss_mb()}
            metrics["popular"] = evaluate_channel(Popular().fit(split.train_full), split, cfg.evaluate.ks)
    with step("writing the bundle (ONNX towers, FAISS index)", show_progress):
        path = write_bundle(cfg.out, cfg, fit.model, fit.encoders, vectors, split.train_full, data.users,
                            data.items, fingerprint=data.fingerprint(), source=data.source, metrics=metrics,
                            training={"best_epoch": fit.best_epoch, "seconds": seconds, "log": fit.log,
                                      "split": split.summary()})
    return TrainReport(path, metrics, fit.best_epoch, fit.log, seconds)


def evaluate(cfg: Config, channels: list[str] | None = None, bundle: Path | None = None, *,
             show_progress: bool = True) -> dict[str, dict[str, Any]]:
    """BENCHMARK.md metrics of each channel on the config's data, keyed by channel then metric.

    ``two_tower`` uses ``bundle`` when given (its ONNX tower and ANN index, as served), otherwise
    it is trained here under the protocol.  Each row carries its training time and the process's
    peak memory so far.
    """
    channels = channels or list(CHANNELS)
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ConfigError(f"unknown channel(s) {unknown}; choose from {list(CHANNELS)}")
    data, split = _read(cfg, show_progress)
    out: dict[str, dict[str, Any]] = {}
    for name in channels:
        started = time.perf_counter()
        if name == "popular":
            channel: Any = Popular().fit(split.train_full)
        elif bundle is not None:
            channel = Bundle.load(bundle).channel()
        else:
            fit, _ = _fit_protocol(cfg, data, split, show_progress)
            vectors = item_vectors(fit.model, Examples(split.train_full, fit.encoders, data.users, data.items))
            channel = two_tower_channel(fit.model, fit.encoders, data.users, vectors, cfg.index)
        fitted = time.perf_counter() - started
        with step(f"evaluating {name}", show_progress):
            out[name] = {**evaluate_channel(channel, split, cfg.evaluate.ks), "train_seconds": fitted,
                         "peak_rss_mb": peak_rss_mb()}
    return out


def recommend(bundle: Path | str | Bundle, user_id: str, k: int = 20,
              context: dict[str, Any] | None = None) -> pd.DataFrame:
    """Top-``k`` items for ``user_id`` from a bundle, seen items removed, with item attributes."""
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    return b.recommend(str(user_id), k, context)
