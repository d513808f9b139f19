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
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_model

from embrecall import __version__
from embrecall.config import Config
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


def _user_table(cfg: Config, history: pd.DataFrame, users: pd.DataFrame | None) -> pd.DataFrame:
    """Per user: the profile columns the user tower reads, and the user's ``History``."""
    seen = user_histories(history)
    table = pd.DataFrame({"items": pd.Series(list(map(list, seen.values())), index=list(seen), dtype=object)})
    cols = [f.input_column for f in cfg.features.user if Encoders.is_profile(f) and f.input_column != "user_id"]
    if users is not None and cols:
        table = table.join(users[cols].astype(str).where(users[cols].notna(), None), how="outer")
        table["items"] = table["items"].apply(lambda v: v if isinstance(v, list) else [])
    table.index.name = "user_id"
    return table


def write_bundle(out_root: Path, cfg: Config, model: TwoTower, encoders: Encoders, item_vectors: np.ndarray,
                 history: pd.DataFrame, users: pd.DataFrame | None, items: pd.DataFrame | None,
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
        user_table = _user_table(cfg, history, users)
        sample_ids = user_table.index[:4]
        sample_q = [UserQuery(str(u), tuple(user_table.at[u, "items"])) for u in sample_ids]
        ctx = encoders.context_frame(history.reindex(columns=encoders.context_columns).tail(len(sample_q))
                                     .to_dict("records"))
        user_inputs = encoders.encode_users(pd.Index(sample_ids, dtype=object), users, ctx,
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
        user_table.reset_index().to_parquet(tmp / "users.parquet", index=False)
        stored = {name: channel.save(tmp) for name, channel in (channels or {}).items()}
        files = [*TWO_TOWER_FILES, *(f for written in stored.values() for f in written)]
        manifest = {
            "format": "embrecall-bundle", "format_version": BUNDLE_FORMAT, "version": version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "embrecall_version": __version__,
            "data": {"source": source, "fingerprint": fingerprint, "events": int(len(history)),
                     "until": int(history["timestamp"].max()) if len(history) else 0,
                     "profile": data_profile(history),
                     "users": int(len(user_table)), "items": int(encoders.n_items)},
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
