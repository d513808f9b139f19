"""Write a bundle (see ``embrecall.export.bundle`` for its layout): the training side, which
exports the PyTorch towers to ONNX; reading a bundle needs none of this."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_model

from embrecall import __version__
from embrecall.channel_table import TWO_TOWER
from embrecall.config import Config
from embrecall.data.log import EventLog
from embrecall.export.bundle import BUNDLE_FORMAT, MANIFEST_HASH, sha256
from embrecall.export.signing import sign_manifest
from embrecall.features import Encoders
from embrecall.index import FaissIndex
from embrecall.models.channel import History, StoredChannel, UserQuery, user_histories
from embrecall.models.two_tower import TwoTower
from embrecall.training.onnx_export import export_tower
from embrecall.training.optimizer import Optimizer
from embrecall.training.warm_start import OPTIMIZER_FILE, save_optimizer

__all__ = ["write_bundle", "TWO_TOWER_FILES"]

TWO_TOWER_FILES = [
    "encoders.json",
    "weights.safetensors",
    "user_tower.onnx",
    "item_tower.onnx",
    "item_vectors.safetensors",
    "index.faiss",
    "items.parquet",
    "users.parquet",
]


HISTORY_KEPT = 1_000  # a user's last events a bundle keeps: what the service excludes and the towers read


def _user_table(cfg: Config, histories: dict[str, History], users: pd.DataFrame | None) -> pd.DataFrame:
    """Per user: the user's ``History`` and the profile columns the user tower reads."""
    table = pd.DataFrame({"items": pd.Series(list(map(list, histories.values())), index=list(histories), dtype=object)})
    cols = [f.input_column for f in cfg.features.user if Encoders.is_profile(f) and f.input_column != "user_id"]
    if users is not None and cols:
        table = table.join(users[cols].astype(str).where(users[cols].notna(), None), how="left")
    table.index.name = "user_id"
    return table


def _write_user_table(cfg: Config, log: EventLog, users: pd.DataFrame | None, path: Path) -> tuple[int, pd.DataFrame]:
    """``users.parquet``, written part by part (each user's last ``HISTORY_KEPT`` events), then the
    user table's users without events; returns the users written and the first part's events
    (a sample for the ONNX export)."""
    writer: pq.ParquetWriter | None = None
    written, seen, first = 0, [], pd.DataFrame()

    def write(table: pd.DataFrame) -> None:
        nonlocal writer, written
        if len(table):
            frame = pa.Table.from_pandas(
                table.reset_index(), preserve_index=False, schema=writer.schema if writer else None
            )
            writer = writer or pq.ParquetWriter(path, frame.schema)
            writer.write_table(frame)
            written += len(table)

    try:
        for ev in log.parts():
            first = first if len(first) else ev
            ev = ev[(ev.groupby("user_id", sort=False).cumcount(ascending=False) < HISTORY_KEPT).to_numpy()]
            table = _user_table(cfg, user_histories(ev), users)
            seen.append(table.index.to_numpy(object))
            write(table)
        if users is not None:
            rest = users.index.difference(pd.Index(np.concatenate(seen) if seen else [], dtype=object))
            write(_user_table(cfg, {u: () for u in rest}, users))
    finally:
        if writer is not None:
            writer.close()
    return written, first


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / MANIFEST_HASH).write_text(sha256(folder / "manifest.json") + "\n")
    sign_manifest(folder)


def write_bundle(
    out_root: Path,
    cfg: Config,
    model: TwoTower,
    encoders: Encoders,
    item_vectors: np.ndarray,
    history: EventLog,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    *,
    fingerprint: str,
    source: str,
    training: dict[str, Any],
    channels: Mapping[str, StoredChannel] | None = None,
    measure: Callable[[Path], dict[str, Any]] | None = None,
    optimizer: Optimizer | None = None,
) -> Path:
    """Write a new version under ``out_root`` and return its folder; ``channels``: fitted channels
    the service serves beside the two towers, by name; ``measure``: the version's metrics, given
    its folder once every file is there (before it is renamed into place, so a version is never
    seen without them); ``optimizer``: its state is kept, for a later update to train on from."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    digest = hashlib.sha256(f"{fingerprint}{cfg.model_dump_json()}{time.time_ns()}".encode()).hexdigest()[:6]
    version = f"{stamp}-{digest}"
    out_root = Path(out_root)
    tmp = out_root / f".tmp-{version}"
    tmp.mkdir(parents=True, exist_ok=False)
    try:
        (tmp / "encoders.json").write_text(json.dumps(encoders.to_json()))
        save_model(model, str(tmp / "weights.safetensors"))
        if optimizer is not None:
            save_optimizer(optimizer, tmp / OPTIMIZER_FILE)
        n_users, sample = _write_user_table(cfg, history, users, tmp / "users.parquet")
        sample = sample[sample["user_id"].isin(pd.unique(sample["user_id"])[:4])]
        sample_q = [UserQuery(str(u), h) for u, h in user_histories(sample).items()]
        ctx = encoders.context_frame(
            sample.reindex(columns=encoders.context_columns).tail(len(sample_q)).to_dict("records")
        )
        user_inputs = encoders.encode_users(
            pd.Index([q.user_id for q in sample_q], dtype=object),
            users,
            ctx,
            encoders.history_matrix([q.history for q in sample_q]),
        )
        export_tower(model.user_tower, user_inputs, tmp / "user_tower.onnx")
        item_inputs = encoders.encode_items(items, encoders.catalog[:4])
        export_tower(model.item_tower, item_inputs, tmp / "item_tower.onnx")
        save_numpy(
            {"vectors": np.ascontiguousarray(item_vectors, dtype=np.float32)}, str(tmp / "item_vectors.safetensors")
        )
        FaissIndex.build(item_vectors, cfg.index).save(tmp / "index.faiss")
        catalog = pd.DataFrame(index=pd.Index(encoders.catalog, name="item_id"))
        if items is not None:
            catalog = catalog.join(items)
        catalog.reset_index().to_parquet(tmp / "items.parquet", index=False)
        stored = {name: channel.save(tmp) for name, channel in (channels or {}).items()}
        files = [*TWO_TOWER_FILES, *(f for written in stored.values() for f in written)]
        files += [OPTIMIZER_FILE] if optimizer is not None else []
        manifest = {
            "format": "embrecall-bundle",
            "format_version": BUNDLE_FORMAT,
            "version": version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "embrecall_version": __version__,
            "data": {
                "source": source,
                "fingerprint": fingerprint,
                **history.summary(),
                "users": n_users,
                "items": int(encoders.n_items),
            },
            "model": {
                "dim": int(item_vectors.shape[1]),
                "user_inputs": [f.name for f in cfg.features.user],
                "item_inputs": [f.name for f in cfg.features.item],
            },
            "index": {"kind": cfg.index.kind, "size": int(len(item_vectors))},
            "training": training,
            "metrics": {},
            "channels": {TWO_TOWER: TWO_TOWER_FILES, **stored},
            "config": cfg.model_dump(mode="json"),
            "files": {name: sha256(tmp / name) for name in files},
        }
        _write_manifest(tmp, manifest)
        if measure is not None:
            _write_manifest(tmp, {**manifest, "metrics": measure(tmp)})
        final = out_root / version
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
