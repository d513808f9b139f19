"""The Python API: the same steps the CLI runs — train a bundle, evaluate channels, recommend.

>>> from embrecall import load_config, train, recommend
>>> report = train(load_config("configs/ml100k.toml"))
>>> recommend(report.bundle, "196", k=10)
"""

from __future__ import annotations

import hashlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embrecall.channel_table import EVALUATED, STORED, TWO_TOWER
from embrecall.config import Config
from embrecall.data.dataset import Dataset
from embrecall.data.load import load_dataset, numeric_columns
from embrecall.data.log import EventLog, MemoryLog
from embrecall.data.shards import prepare_shards
from embrecall.data.split import Split, cold_item_split, split_dataset
from embrecall.data.table import read_feature_tables
from embrecall.errors import ConfigError, DataError, NothingNew
from embrecall.evaluation import evaluate_channel
from embrecall.evaluation.entities import evaluate_entities
from embrecall.evaluation.protocol import split_by
from embrecall.export import Bundle
from embrecall.models.channel import Channel, UserQuery
from embrecall.models.dither import Dithered
from embrecall.models.entities import Entities, EntityRanker, EntityRecall, HistoryEntities
from embrecall.models.fitting import fit_channel, fit_problem
from embrecall.models.merge import Merged, MergeRule
from embrecall.models.tower_channel import TowerChannel
from embrecall.progress import note, step
from embrecall.serve.cache import VectorCache
from embrecall.serve.service import ServedChannel, ServingVersion
from embrecall.training.bundle_writer import write_bundle
from embrecall.training.device import training_device
from embrecall.training.distributed import agree, barrier, join_from_env, leave, ranks
from embrecall.training.trainer import FitResult, fit_two_tower, item_vectors, two_tower_channel
from embrecall.training.warm_start import Parent, align_onto, version_folder

__all__ = [
    "TrainReport",
    "read_split",
    "train",
    "evaluate",
    "evaluate_entity_recall",
    "evaluate_cold_items",
    "build_channel",
    "fit_channel",
    "recommend",
]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class TrainReport:
    bundle: Path | None  # None on the ranks other than 0 of a torchrun (rank 0 writes the bundle)
    metrics: dict[str, dict[str, float]]
    best_epoch: int
    log: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _in_memory(cfg: Config) -> None:
    """Refuse a sharded log where a command needs the whole log in memory."""
    if cfg.data.shards is not None:
        raise ConfigError(
            "this command reads the whole log into memory; with data.shards, `embrecall train` reports "
            "the test metrics on data.shards.eval_users sampled users (leave data.shards out to run "
            "this command in memory)"
        )


def read_split(cfg: Config, show_progress: bool = True) -> tuple[Dataset, Split]:
    _in_memory(cfg)
    with step(f"reading {cfg.data.format} data and splitting ({cfg.split.kind})", show_progress):
        data = load_dataset(cfg)
        split = split_dataset(data, cfg.split)
    for text in data.notes:
        note(text)
    if show_progress:
        events = data.events
        note(
            f"{len(events):,} interactions of {events['user_id'].nunique():,} users on {events['item_id'].nunique():,} "
            f"items; {split.summary()}"
        )
    return data, split


@dataclass
class TrainingData:
    """What a two-tower fit reads: its two logs (``train`` to choose epochs, ``train_full`` for the
    final fit), in memory or as parts of a sharded log, the split its validation and test figures
    come from (every user, or a sample of a sharded log's), and the feature tables."""

    train: EventLog
    train_full: EventLog
    split: Split
    users: pd.DataFrame | None
    items: pd.DataFrame | None
    exposures: pd.DataFrame | None
    source: str
    summary: str

    @classmethod
    def of(cls, data: Dataset, split: Split) -> TrainingData:
        return cls(
            MemoryLog(split.train),
            MemoryLog(split.train_full),
            split,
            data.users,
            data.items,
            data.exposures,
            data.source,
            split.summary(),
        )


def read_training_data(cfg: Config, show_progress: bool = True) -> tuple[TrainingData, str]:
    """The training data and its fingerprint: the log read into memory, or (``data.shards``) its
    shards, written on first use (each rank its part, ``prepare_shards``) and opened by every rank."""
    if cfg.data.shards is None:
        data, split = read_split(cfg, show_progress)
        return TrainingData.of(data, split), data.fingerprint()
    with step(
        f"reading the log into {cfg.data.shards.count} user shards and splitting ({cfg.split.kind})", show_progress
    ):
        r = ranks()
        shards = prepare_shards(cfg, r.rank, r.world, agree, barrier)
        notes = shards.notes
        users, items = read_feature_tables(cfg.data, numeric_columns(cfg), notes)
        sample = shards.sample_split(cfg.data.shards.eval_users, cfg.train.seed)
    for text in notes:
        note(text)
    if show_progress:
        note(f"{shards.summary()}; validation and test figures on {sample.test['user_id'].nunique():,} sampled users")
    return TrainingData(
        shards.log("train"), shards.log("train_full"), sample, users, items, None, str(cfg.data.path), shards.summary()
    ), shards.folder.name


def checkpoint_folder(cfg: Config) -> Path:
    """Where a run keeps its epoch checkpoints: one folder per configuration (seed included), so
    runs started side by side from one folder never touch each other's, and running the same
    configuration again with ``train.resume`` finds its own."""
    key = hashlib.sha256(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": False})}).model_dump_json().encode()
    ).hexdigest()[:12]
    return cfg.out / "checkpoints" / key


def _fit_protocol(cfg: Config, td: TrainingData, show_progress: bool) -> tuple[FitResult, float]:
    """Choose the epoch count on validation, then (with ``train.refit``) fit train + validation for it."""
    started = time.perf_counter()
    ckpt = checkpoint_folder(cfg)
    has_valid = len(td.split.valid) > 0
    selected = fit_two_tower(
        cfg,
        td.train,
        td.users,
        td.items,
        epochs=cfg.train.epochs,
        validation=td.split if has_valid else None,
        checkpoint_dir=ckpt / "select",
        show_progress=show_progress,
        label="select",
        exposures=td.exposures,
    )
    final = selected
    if cfg.train.refit and has_valid:
        final = fit_two_tower(
            cfg,
            td.train_full,
            td.users,
            td.items,
            epochs=selected.best_epoch,
            checkpoint_dir=ckpt / "final",
            show_progress=show_progress,
            label="final",
            exposures=td.exposures,
        )
        final.log = selected.log + [{**e, "phase_final": 1.0} for e in final.log]
        final.best_epoch = selected.best_epoch
    return final, time.perf_counter() - started


def _fit_update(cfg: Config, td: TrainingData, parent: Parent, show_progress: bool) -> tuple[FitResult, float]:
    """Train on from ``parent`` for ``update.epochs`` over train + validation's events after the
    parent's, each epoch with a fresh replay of older ones (no epoch choice: a fixed, short schedule)."""
    newest = int(td.split.train_full["timestamp"].max()) if len(td.split.train_full) else 0
    if newest <= parent.until and td.train_full.whole() is not None:
        raise NothingNew(
            f"no training event after version {parent.version}'s last one ({parent.until}): nothing new to "
            "train on from it",
            file=td.source,
        )
    fit = fit_two_tower(
        cfg,
        td.train_full,
        td.users,
        td.items,
        epochs=cfg.update.epochs,
        show_progress=show_progress,
        label=f"update from {parent.version}",
        exposures=td.exposures,
        parent=parent,
    )
    fit.best_epoch = cfg.update.epochs
    return fit, fit.seconds


def train(
    cfg: Config,
    *,
    show_progress: bool = True,
    start_from: Path | str | None = None,
    align_to: Path | str | None = None,
) -> TrainReport:
    """Read the data, fit the two-tower model under the protocol, evaluate it and popularity on
    the test targets, and write a bundle under ``cfg.out``.  The bundle's model is the one
    the metrics describe: trained on train + validation, never on test events.

    ``start_from`` (a bundle, or a registry: its active version): train on from that version
    instead (``_fit_update``); the manifest records the parent.  ``align_to`` (or, with
    ``update.align``, the parent): rotate the new space onto that version's.

    Under ``torchrun`` every rank trains its part of each step (``training.distributed``); then
    rank 0 alone evaluates and writes the bundle.  With ``data.shards`` the log is read shard by
    shard and the test figures are those of ``data.shards.eval_users`` sampled users."""
    r = join_from_env(training_device(cfg.train.device))
    show_progress = show_progress and r.main
    parent = Parent.of(start_from) if start_from is not None else None
    if parent is not None:
        parent.check(cfg)
    onto_path = align_to if align_to is not None else start_from if cfg.update.align else None
    onto = Bundle.load(version_folder(onto_path)) if onto_path is not None else None
    td, fingerprint = read_training_data(cfg, show_progress)
    history = td.train_full if cfg.train.refit else td.train
    served = [n for n in dict.fromkeys([*cfg.channels.serve, cfg.channels.fallback]) if n not in (None, TWO_TOWER)]
    problems = channel_problems(cfg, served, history, list(td.split.train_full.columns), td.items)
    if problems:
        raise ConfigError("channels.serve: " + "; ".join(f"{n}: {why}" for n, why in problems.items()))
    fit, seconds = _fit_update(cfg, td, parent, show_progress) if parent else _fit_protocol(cfg, td, show_progress)
    training: dict[str, Any] = {"best_epoch": fit.best_epoch, "seconds": seconds, "log": fit.log, "split": td.summary}
    if parent is not None:
        training["parent"] = parent.manifest_entry(fit.pairs, fit.steps)
    if onto is not None:
        training["alignment"] = {
            "onto": onto.version,
            **align_onto(fit.model, item_vectors(fit.model, fit.catalog), fit.encoders.catalog, onto),
        }
    if r.world > 1:
        leave()
        if not r.main:
            return TrainReport(None, {}, fit.best_epoch, fit.log, seconds)
    stored = {name: fit_channel(name, cfg, history, td.items, show_progress) for name in served}
    metrics: dict[str, dict[str, float]] = {}

    def measure(folder: Path) -> dict[str, dict[str, float]]:
        """The test figures of the bundle in ``folder`` as the service answers with it (what
        ``evaluate --bundle`` measures, and what the gate reads)."""
        if not len(td.split.test):
            return {}
        version = ServingVersion(folder, VectorCache(size=0))
        ks, exposures = cfg.evaluate.ks, td.exposures
        metrics["two_tower"] = {
            **evaluate_channel(version.tower, td.split, ks, exposures=exposures),
            "train_seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
        }
        if len(version.channels) > 1:
            metrics["served"] = evaluate_channel(
                ServedChannel(version, version.quotas, "served"), td.split, ks, exposures=exposures
            )
        metrics["popular"] = evaluate_channel(fit_channel("popular", cfg, td.train_full, td.items), td.split, ks)
        return metrics

    with step("writing the bundle (ONNX towers, FAISS index) and evaluating it on test", show_progress):
        path = write_bundle(
            cfg.out,
            cfg,
            fit.model,
            fit.encoders,
            item_vectors(fit.model, fit.catalog),
            td.train_full,
            td.users,
            td.items,
            fingerprint=fingerprint,
            source=td.source,
            measure=measure,
            training=training,
            channels=stored,
            optimizer=fit.optimizer,
        )
    return TrainReport(path, metrics, fit.best_epoch, fit.log, seconds)


def _fit_tower(cfg: Config, data: Dataset, split: Split, show_progress: bool) -> TowerChannel:
    """The two-tower channel fitted under the protocol (as ``train`` fits it), over a live index
    of its item vectors."""
    fit, _ = _fit_protocol(cfg, TrainingData.of(data, split), show_progress)
    vectors = item_vectors(fit.model, fit.catalog)
    return two_tower_channel(fit.model, fit.encoders, data.users, vectors, cfg.index, data.items)


def build_channel(
    name: str,
    cfg: Config,
    data: Dataset,
    split: Split,
    *,
    bundle: ServingVersion | None = None,
    built: dict[str, Channel] | None = None,
    show_progress: bool = True,
) -> Channel:
    """One channel fitted on train + validation (the two-tower model as in ``train``).

    With ``bundle`` (a served version), a channel the version serves, and ``served`` (its channels
    merged by its quotas), run through the service's own objects: live index, filters, merge.
    Without, ``served`` merges the channels of ``channels.serve`` as the service would, reusing
    those already in ``built``.
    """
    built = built if built is not None else {}
    if name in built:
        return built[name]
    if bundle is not None and name in bundle.channels:
        return bundle.channels[name]
    if bundle is not None and name == "served":
        return ServedChannel(bundle, bundle.quotas, name)
    if name == "served":
        weights = {c: w for c, w in cfg.channels.serve.items() if w > 0}
        fallback = cfg.channels.fallback
        parts = {
            c: build_channel(c, cfg, data, split, built=built, show_progress=show_progress)
            for c in [*weights, *([fallback] if fallback else [])]
        }
        built.update(parts)
        return Merged(parts, weights, MergeRule.of(cfg.channels), parts[fallback] if fallback else None)
    if name in STORED:
        return fit_channel(name, cfg, MemoryLog(split.train_full), data.items, show_progress)
    if name == TWO_TOWER:
        return _fit_tower(cfg, data, split, show_progress)
    raise ConfigError(f"unknown channel '{name}'; choose from {list(EVALUATED)}")


def channel_problems(
    cfg: Config, names: list[str], log: EventLog, columns: list[str], items: pd.DataFrame | None
) -> dict[str, str]:
    """Why each of ``names`` (``served``: each channel it merges) cannot be fitted on ``log`` (with
    event ``columns``), found before anything is trained; those that can are left out."""
    counts = log.item_counts()
    found = {n: why for n in STORED if (why := fit_problem(n, cfg, counts, items, columns))}
    merged = [c for c, w in cfg.channels.serve.items() if w > 0] + [c for c in [cfg.channels.fallback] if c]
    out = {n: found[n] for n in names if n in found}
    if "served" in names and (inside := [c for c in merged if c in found]):
        out["served"] = f"it merges {inside}: " + "; ".join(found[c] for c in inside)
    return out


def _check_on(on: str, bundle: Path | None) -> None:
    """What an evaluation may be run on: test, or validation when no bundle (trained on it) is given."""
    if on not in ("test", "validation"):
        raise ConfigError(f"evaluate on 'test' or 'validation', not {on!r}")
    if on == "validation" and bundle is not None:
        raise ConfigError("a bundle was trained on the validation events: evaluate it on test, or leave --bundle out")


def evaluate(
    cfg: Config,
    channels: list[str] | None = None,
    bundle: Path | None = None,
    *,
    on: str = "test",
    show_progress: bool = True,
    on_row: Callable[[str, dict[str, Any]], None] | None = None,
    breakdown: bool = False,
) -> dict[str, dict[str, Any]]:
    """BENCHMARK.md metrics of each channel on the config's data, keyed by channel then metric.

    By default every channel and ``served`` (the channels of ``channels.serve`` merged as the
    service merges them).  A default channel that cannot run on this log is skipped with a note
    (EASE over a catalog too large: found before anything is trained; item2vec with no session:
    found when it fits); one named in ``channels`` stops the run, before anything is trained
    where that can be foreseen.  With ``bundle``, the channels that bundle serves (and
    ``served``, their merge; by default just those) run as the service runs them: the version
    made live, its live index and merge; the others are fitted here under the protocol.  Each
    value of an ``evaluate.per`` column (a scene) adds a row per channel, ``"<channel>
    [scene=<value>]"``.  ``on = "validation"``: every channel fitted on train and measured on the
    validation targets, the figures to choose settings by.  Each row carries its fitting time
    (for ``served``, only what was not already fitted for another row) and the process's peak
    memory so far (so it depends on the rows before it), and is given to ``on_row`` as soon as
    it is measured; with ``channels.dither_epsilon`` > 1 every channel's output is dithered.
    ``breakdown``: each row also holds its hits per group of targets (``evaluation.breakdown``).
    """
    unknown = [c for c in channels or () if c not in EVALUATED]
    if unknown:
        raise ConfigError(f"unknown channel(s) {unknown}; choose from {list(EVALUATED)}")
    _check_on(on, bundle)
    served = None if bundle is None else ServingVersion(bundle, VectorCache(size=0))
    named = bool(channels)
    channels = channels or (list(EVALUATED) if served is None else [*served.channels, "served"])
    data, split = read_split(cfg, show_progress)
    if on == "validation":
        split = split.validation_view()
    ready = set(served.channels) | {"served"} if served is not None else set()
    problems = {
        n: why
        for n, why in channel_problems(
            cfg, channels, MemoryLog(split.train_full), list(split.train_full.columns), data.items
        ).items()
        if n not in ready
    }
    if problems and named:
        raise ConfigError("; ".join(f"{n}: {why}" for n, why in problems.items()))
    for name, why in problems.items():
        note(f"skipping {name}: {why}")
    parts = {column: split_by(split, column) for column in cfg.evaluate.per}  # a missing column is said first
    built: dict[str, Channel] = {}
    out: dict[str, dict[str, Any]] = {}

    def row(name: str, metrics: dict[str, Any]) -> None:
        out[name] = metrics
        if on_row is not None:
            on_row(name, metrics)

    for name in [c for c in channels if c not in problems]:
        started = time.perf_counter()
        try:
            channel = build_channel(name, cfg, data, split, bundle=served, built=built, show_progress=show_progress)
        except (DataError, ConfigError) as err:  # what no check foresees (item2vec with no session left)
            if named:
                raise
            note(f"skipping {name}: {err}")
            continue
        built[name] = channel
        fitted = time.perf_counter() - started
        if cfg.channels.dither_epsilon > 1:
            channel = Dithered(channel, cfg.channels.dither_epsilon, seed=cfg.train.seed)
        with step(f"evaluating {name}", show_progress):
            row(
                name,
                {
                    **evaluate_channel(channel, split, cfg.evaluate.ks, exposures=data.exposures, breakdown=breakdown),
                    "train_seconds": fitted,
                    "peak_rss_mb": peak_rss_mb(),
                },
            )
            for column, by_value in parts.items():
                for value, part in by_value.items():
                    row(
                        f"{name} [{column}={value}]",
                        evaluate_channel(channel, part, cfg.evaluate.ks, exposures=data.exposures),
                    )
    return out


def evaluate_entity_recall(
    cfg: Config, attribute: str, bundle: Path | None = None, *, on: str = "test", show_progress: bool = True
) -> dict[str, dict[str, float]]:
    """Entity recall (u2c) of an item attribute: the two-tower model's ranking of its values (as
    the bundle serves it, with ``bundle``) beside the user's own recent values and the most
    clicked ones, on the held-out item's values (``evaluation.entities``)."""
    _check_on(on, bundle)
    data, split = read_split(cfg, show_progress)
    if on == "validation":
        split = split.validation_view()
    if bundle is not None:
        tower: EntityRanker = ServingVersion(bundle, VectorCache(size=0)).entity_recall(attribute)
    else:
        fitted = _fit_tower(cfg, data, split, show_progress)
        catalog = list(fitted.profiles.encoders.catalog)
        entities = Entities.of(attribute, data.items, catalog)
        tower = EntityRecall(entities, fitted.user_vectors, fitted.index.vectors(catalog), cfg.train.temperature)
    rows: dict[str, EntityRanker] = {
        "two_tower": tower,
        "history": HistoryEntities(data.items, attribute, split.train_full),
        "popular": HistoryEntities(data.items, attribute, split.train_full, history=0),
    }
    out = {}
    for name, channel in rows.items():
        with step(f"evaluating {name} on {attribute}", show_progress):
            out[name] = evaluate_entities(channel, split, data.items, attribute, cfg.evaluate.ks)
    return out


def evaluate_cold_items(cfg: Config, *, show_progress: bool = True) -> dict[str, Any]:
    """The two-tower model on items nobody clicked before the test period.

    Events before the ``evaluate.cold_quantile`` time quantile train the model (for
    ``train.epochs`` epochs; the catalog includes every item of the item table, so new items are
    embedded from their attributes); each user's first interaction with an item new in the test
    period is a target, ranked among the training catalog plus those new items.
    """
    _in_memory(cfg)
    data = load_dataset(cfg)
    test_start = int(np.quantile(data.events["timestamp"].to_numpy(), cfg.evaluate.cold_quantile))
    split = cold_item_split(data.events, test_start)
    if len(split.test) == 0:
        raise DataError(
            "no interaction with a new item after the cold-item cut-off; lower evaluate.cold_quantile", file=data.source
        )
    cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"catalog": "items"})})
    fit = fit_two_tower(
        cfg,
        MemoryLog(split.train_full),
        data.users,
        data.items,
        epochs=cfg.train.epochs,
        show_progress=show_progress,
        label="cold-item fit",
    )
    vectors = item_vectors(fit.model, fit.catalog)
    channel = two_tower_channel(fit.model, fit.encoders, data.users, vectors, cfg.index, data.items)
    with step("evaluating on cold items", show_progress):
        metrics = evaluate_channel(channel, split, cfg.evaluate.ks, cold_items=True)
    return {
        **metrics,
        "targets": len(split.test),
        "new_items": int(split.test["item_id"].nunique()),
        "train_seconds": fit.seconds,
    }


def recommend(
    bundle: Path | str | Bundle | ServingVersion, user_id: str, k: int = 20, context: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Top-``k`` items for ``user_id`` as the service answers them (the bundle's channels merged
    by its quotas), seen items removed, with the channel that found each and item attributes."""
    version = bundle if isinstance(bundle, ServingVersion) else ServingVersion(bundle, VectorCache(size=0))
    history = version.history(str(user_id), events=())
    query = UserQuery(str(user_id), history, {"timestamp": int(time.time()), **(context or {})})
    found = ServedChannel(version, version.quotas, "served").recommend([query], k, [set(history)])[0]
    out = pd.DataFrame({"item_id": found.item_ids, "score": found.scores, "channel": found.channels})
    out = out.join(version.bundle.items, on="item_id")
    out.attrs["known_user"] = str(user_id) in version.profiles  # else served from features alone
    out.attrs["version"] = version.version
    return out
