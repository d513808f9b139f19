"""Write a bundle (see ``embrecall.export.bundle`` for its layout): the training side, which
exports the PyTorch towers to ONNX; reading a bundle needs none of this."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_model

from embrecall import __version__
from embrecall.config import Config
from embrecall.data.shards import ShardLog
from embrecall.export.bundle import BUNDLE_FORMAT, MANIFEST_HASH, sha256
from embrecall.export.gate import data_profile
from embrecall.export.onnx_towers import export_tower
from embrecall.features import Encoders
from embrecall.index import FaissIndex
from embrecall.models.channel import StoredChannel, UserQuery, user_histories
from embrecall.models.two_tower import TwoTower

__all__ = ["write_bundle", "TWO_TOWER_FILES"]

TWO_TOWER_FILES = ["encoders.json", "weights.safetensors", "user_tower.onnx", "item_tower.onnx",
                   "item_vectors.safetensors", "index.faiss", "items.parquet", "users.parquet"]


# A sharded log's bundle keeps each user's last events only, as many as the events stream keeps per user.
HISTORY_KEPT = 200


def _user_table(cfg: Config, history: pd.DataFrame, users: pd.DataFrame | None, how: str = "outer") -> pd.DataFrame:
    """Per user: the profile columns the user tower reads, and the user's ``History``; ``how``
    "left" keeps the users of ``history`` only (one shard's)."""
    seen = user_histories(history)
    table = pd.DataFrame({"items": pd.Series(list(map(list, seen.values())), index=list(seen), dtype=object)})
    cols = [f.input_column for f in cfg.features.user if Encoders.is_profile(f) and f.input_column != "user_id"]
    if users is not None and cols:
        table = table.join(users[cols].astype(str).where(users[cols].notna(), None), how=how)
        table["items"] = table["items"].apply(lambda v: v if isinstance(v, list) else [])
    table.index.name = "user_id"
    return table


def _sharded_user_table(cfg: Config, log: ShardLog, users: pd.DataFrame | None, path: Path) -> tuple[int, pd.DataFrame]:
    """``users.parquet`` of a sharded log, written shard by shard (each user's last
    ``HISTORY_KEPT`` events), then the user table's users without events; returns the users
    written and the first shard's events (a sample for the ONNX export)."""
    writer: pq.ParquetWriter | None = None
    written, seen, first = 0, [], pd.DataFrame()

    def write(table: pd.DataFrame) -> None:
        nonlocal writer, written
        if len(table):
            frame = pa.Table.from_pandas(table.reset_index(), preserve_index=False,
                                         schema=writer.schema if writer else None)
            writer = writer or pq.ParquetWriter(path, frame.schema)
            writer.write_table(frame)
            written += len(table)

    try:
        for shard in range(log.shards.count):
            ev = log.read(shard)
            first = first if len(first) else ev
            ev = ev[(ev.groupby("user_id", sort=False).cumcount(ascending=False) < HISTORY_KEPT).to_numpy()]
            table = _user_table(cfg, ev, users, how="left")
            seen.append(table.index.to_numpy(object))
            write(table)
        if users is not None:
            rest = users.index.difference(pd.Index(np.concatenate(seen) if seen else [], dtype=object))
            write(_user_table(cfg, first.iloc[:0], users.loc[rest]))
    finally:
        if writer is not None:
            writer.close()
    return written, first


def write_bundle(out_root: Path, cfg: Config, model: TwoTower, encoders: Encoders, item_vectors: np.ndarray,
                 history: pd.DataFrame | ShardLog, users: pd.DataFrame | None, items: pd.DataFrame | None,
                 *, fingerprint: str, source: str, metrics: dict[str, Any], training: dict[str, Any],
                 index: FaissIndex | None = None, channels: Mapping[str, StoredChannel] | None = None) -> Path:
    """Write a new version under ``out_root`` and return its folder; ``index``: the index already
    built over ``item_vectors`` (the one the metrics were measured with), else one is built;
    ``channels``: fitted channels the service serves beside the two towers, by name."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    digest = hashlib.sha256(f"{fingerprint}{cfg.model_dump_json()}{time.time_ns()}".encode()).hexdigest()[:6]
    version = f"{stamp}-{digest}"
    out_root = Path(out_root)
    tmp = out_root / f".tmp-{version}"
    tmp.mkdir(parents=True, exist_ok=False)
    try:
        (tmp / "encoders.json").write_text(json.dumps(encoders.to_json()))
        save_model(model, str(tmp / "weights.safetensors"))
        if isinstance(history, ShardLog):
            n_users, sample = _sharded_user_table(cfg, history, users, tmp / "users.parquet")
            meta = history.shards.meta  # a bundle's history is train + validation: the figures shards.json keeps
            log = {"events": len(history), "until": meta["until"], "profile": meta["profile"]}
        else:
            user_table = _user_table(cfg, history, users)
            user_table.reset_index().to_parquet(tmp / "users.parquet", index=False)
            n_users, sample = len(user_table), history
            log = {"events": len(history), "until": int(history["timestamp"].max()) if len(history) else 0,
                   "profile": data_profile(history)}
        sample = sample[sample["user_id"].isin(pd.unique(sample["user_id"])[:4])]
        sample_q = [UserQuery(str(u), h) for u, h in user_histories(sample).items()]
        ctx = encoders.context_frame(sample.reindex(columns=encoders.context_columns).tail(len(sample_q))
                                     .to_dict("records"))
        user_inputs = encoders.encode_users(pd.Index([q.user_id for q in sample_q], dtype=object), users, ctx,
                                            encoders.history_matrix([q.history for q in sample_q]))
        export_tower(model.user_tower, user_inputs, tmp / "user_tower.onnx")
        item_inputs = encoders.encode_items(items, encoders.catalog_[:4])  # type: ignore[index]
        export_tower(model.item_tower, item_inputs, tmp / "item_tower.onnx")
        save_numpy({"vectors": np.ascontiguousarray(item_vectors, dtype=np.float32)},
                   str(tmp / "item_vectors.safetensors"))
        (index or FaissIndex.build(item_vectors, cfg.index)).save(tmp / "index.faiss")
        catalog = pd.DataFrame(index=pd.Index(encoders.catalog_, name="item_id"))
        if items is not None:
            catalog = catalog.join(items)
        catalog.reset_index().to_parquet(tmp / "items.parquet", index=False)
        stored = {name: channel.save(tmp) for name, channel in (channels or {}).items()}
        files = [*TWO_TOWER_FILES, *(f for written in stored.values() for f in written)]
        manifest = {
            "format": "embrecall-bundle", "format_version": BUNDLE_FORMAT, "version": version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "embrecall_version": __version__,
            "data": {"source": source, "fingerprint": fingerprint, **log, "users": n_users,
                     "items": int(encoders.n_items)},
            "model": {"dim": int(item_vectors.shape[1]), "user_inputs": [f.name for f in cfg.features.user],
                      "item_inputs": [f.name for f in cfg.features.item]},
            "index": {"kind": cfg.index.kind, "size": int(len(item_vectors))},
            "training": training, "metrics": metrics, "channels": {"two_tower": TWO_TOWER_FILES, **stored},
            "config": cfg.model_dump(mode="json"),
            "files": {name: sha256(tmp / name) for name in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (tmp / MANIFEST_HASH).write_text(sha256(tmp / "manifest.json") + "\n")
        final = out_root / version
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
