"""A bundle is one model version on disk: everything serving needs, nothing it must recompute.

    <out>/<version>/
        manifest.json            version, resolved config, data fingerprint, metrics, file hashes
        manifest.sha256          the manifest's own hash (damage to it is seen)
        manifest.sig             its HMAC under a key kept elsewhere, when keys are configured
                                 (``export.signing``: an edited manifest cannot pass as signed)
        encoders.json            fitted feature encoders and the catalog (item_idx -> item_id)
        weights.safetensors      the PyTorch two-tower weights
        optimizer.safetensors    the optimiser's state (what ``train --from`` trains on with)
        user_tower.onnx          the towers, split for serving
        item_tower.onnx
        item_vectors.safetensors (n_items, D) item-tower vectors in item_idx order
        index.faiss              the ANN index over those vectors
        items.parquet            item attributes in item_idx order (shown with recommendations)
        users.parquet            user attributes and each user's history (its items, most recent last)
        <channel>.* files
                                 the other channels the config serves, each written by its own ``save``

The manifest's ``channels`` names every channel the version serves and the files each reads
(``two_tower``: the towers, index and tables above); ``embrecall.channel_table`` says which
class loads each.

A bundle is written to a temporary folder and renamed into place, so a crashed run never
leaves a half-written version behind.  Reading one trusts nothing in it: the manifest must match
its hash, every name in it must be a plain file name inside the folder, and a file that its
library cannot open is a ``BundleError`` naming that file, not a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from safetensors import safe_open

from embrecall.channel_table import CHANNELS, STORED, TWO_TOWER
from embrecall.config import Config, config_from_dict
from embrecall.errors import BundleError
from embrecall.export.onnx_runtime import OnnxTower
from embrecall.export.signing import check_signature
from embrecall.features import Encoders
from embrecall.features.profiles import UserProfiles
from embrecall.index import FaissIndex
from embrecall.models.channel import StoredChannel, UserQuery

__all__ = ["Bundle", "plain_name", "sha256", "BUNDLE_FORMAT", "MANIFEST_HASH"]

BUNDLE_FORMAT = 3  # 2: manifest.sha256; 3: the manifest lists the channels and their files
MANIFEST_HASH = "manifest.sha256"
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
T = TypeVar("T")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plain_name(name: object, what: str, source: Path) -> str:
    """``name`` if it names an entry directly inside a folder (letters, digits, '.', '_', '-'; no
    separators, no '..'); anything read from a file is checked so before it becomes a path."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name) or ".." in name:
        raise BundleError(
            f"{source}: {what} {name!r} is not a plain name (letters, digits, '.', '_', '-'; "
            "no '/' or '..'); the file was edited or damaged"
        )
    return name


def _opened(folder: Path, name: str, load: Callable[[Path], T]) -> T:
    """``load(folder / name)``, with whatever its library raises on a damaged file said as a BundleError."""
    try:
        return load(folder / name)
    except BundleError:
        raise
    except Exception as err:  # onnxruntime, faiss, pyarrow and json each raise their own kinds
        raise BundleError(
            f"{folder}: {name} cannot be opened ({type(err).__name__}: {err}); the bundle is "
            "damaged: re-run `embrecall train`"
        ) from err


class VectorRows:
    """A bundle's (n, D) item vectors as rows read from the file on demand."""

    def __init__(self, path: Path):
        self.path = path
        with safe_open(str(path), framework="numpy") as f:
            self.shape = tuple(f.get_slice("vectors").get_shape())

    def __getitem__(self, rows: slice) -> np.ndarray:
        with safe_open(str(self.path), framework="numpy") as f:
            return f.get_slice("vectors")[rows]


@dataclass
class Bundle:
    """A loaded version: the ONNX user tower and the tables it needs to answer queries. Its index
    and item vectors are read when asked: they are its largest files, and whoever serves them
    keeps the one copy."""

    path: Path
    manifest: dict[str, Any]
    config: Config
    encoders: Encoders
    items: pd.DataFrame
    users: pd.DataFrame
    user_tower: OnnxTower
    item_tower: OnnxTower
    channels: dict[str, StoredChannel]  # besides two_tower, which the fields above make up

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @staticmethod
    def manifest_of(path: Path | str, verify: bool = True, signed: bool = True) -> dict[str, Any]:
        """A bundle's manifest, after checking it against its hash, its signature where keys are
        configured (unless ``signed`` is off: what signing checks first), and that every file it
        lists is there and, with ``verify``, matches its hash; loads nothing else."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise BundleError(
                f"{path} is not a bundle: manifest.json is missing "
                "(point --bundle at a folder written by `embrecall train`)"
            )
        if not (path / MANIFEST_HASH).is_file():
            raise BundleError(
                f"{path}: {MANIFEST_HASH} is missing: the bundle is damaged or was written by an older "
                "embrecall; re-run `embrecall train`"
            )
        raw = manifest_path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != (path / MANIFEST_HASH).read_text(errors="replace").strip():
            raise BundleError(
                f"{manifest_path} does not match {MANIFEST_HASH}: it was changed or damaged after "
                "the bundle was written"
            )
        if signed:
            check_signature(path, raw)
        try:
            manifest = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(f"{manifest_path} is not UTF-8 JSON ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format_version") != BUNDLE_FORMAT:
            found = manifest.get("format_version") if isinstance(manifest, dict) else None
            raise BundleError(
                f"{path}: bundle format {found}, this embrecall reads format {BUNDLE_FORMAT}; re-run `embrecall train`"
            )
        plain_name(manifest.get("version"), "version", manifest_path)
        files = manifest.get("files")
        if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
            raise BundleError(f"{manifest_path} has no 'files' table of file name -> sha256")
        for name, digest in files.items():
            f = path / plain_name(name, "file name", manifest_path)
            if not f.is_file():
                raise BundleError(f"{path}: {name} is missing; the bundle is incomplete")
            if verify and sha256(f) != digest:
                raise BundleError(
                    f"{path}: {name} does not match the hash in manifest.json; the file was "
                    "changed or damaged after the bundle was written"
                )
        return manifest

    @classmethod
    def load(cls, path: Path | str, verify: bool = True) -> Bundle:
        """Open a bundle folder; with ``verify``, every file must match its hash in the manifest."""
        path = Path(path)
        manifest = cls.manifest_of(path, verify)
        config = config_from_dict(manifest.get("config"), f"{path / 'manifest.json'} (config)")
        encoders = _opened(
            path, "encoders.json", lambda f: Encoders.from_json(config.features, json.loads(f.read_text()))
        )
        items = _opened(path, "items.parquet", lambda f: pd.read_parquet(f).set_index("item_id"))
        users = _opened(path, "users.parquet", lambda f: pd.read_parquet(f).set_index("user_id"))
        return cls(
            path,
            manifest,
            config,
            encoders,
            items,
            users,
            _opened(path, "user_tower.onnx", OnnxTower),
            _opened(path, "item_tower.onnx", OnnxTower),
            cls._channels(path, manifest, config),
        )

    @staticmethod
    def _channels(path: Path, manifest: dict[str, Any], config: Config) -> dict[str, StoredChannel]:
        """The stored channels the manifest lists, each read by its own class."""
        listed = manifest.get("channels")
        if not isinstance(listed, dict) or TWO_TOWER not in listed:
            raise BundleError(
                f"{path / 'manifest.json'} has no 'channels' table naming two_tower; re-run `embrecall train`"
            )
        out: dict[str, StoredChannel] = {}
        for name, files in listed.items():
            if name == TWO_TOWER:
                continue
            if name not in STORED:
                raise BundleError(
                    f"{path}: channel {name!r} is not one this embrecall can serve ({sorted(STORED)}); "
                    "upgrade embrecall or re-run `embrecall train`"
                )
            if not isinstance(files, list) or not files or not all(f in manifest["files"] for f in files):
                raise BundleError(f"{path / 'manifest.json'}: channel {name!r} lists files the manifest does not hash")
            stored = CHANNELS[name].load_class()

            def load(_: Path, cls: Any = stored) -> StoredChannel:
                return cls.load(path, config)

            out[name] = _opened(path, files[0], load)
        return out

    def check(self) -> None:
        """Run every part once (user tower, item tower, index search, each channel), so that a file which
        opens but does not fit the others is refused before the version is published."""
        try:
            query = self.query(str(self.users.index[0])) if len(self.users) else UserQuery("")
            one = self.users.iloc[:1]  # profiles of one user: a large users table is encoded when served
            user = self.user_tower(
                UserProfiles(self.encoders, one).inputs([query.user_id], [query.history], [query.context])
            )
            vector = self.item_tower(self.encoders.encode_items(self.items, self.encoders.catalog[:1]))
            interests, index = self.config.model.interests, self.index()
            wanted = (1, index.dim) if interests == 1 else (1, interests, index.dim)
            if vector.shape != (1, index.dim) or user.shape != wanted:
                raise ValueError(
                    f"the towers give vectors of shapes {user.shape[1:]} and {vector.shape[1:]}, the "
                    f"index holds dim={index.dim} (model.interests = {interests})"
                )
            index.search(user.reshape(-1, index.dim), 1)
            for channel in self.channels.values():
                channel.recommend([query], 1)
        except Exception as err:
            raise BundleError(
                f"{self.path}: the bundle's parts do not work together ({type(err).__name__}: "
                f"{err}); re-run `embrecall train`"
            ) from err

    def index(self) -> FaissIndex:
        """The ANN index over the item vectors, read now (a caller keeps it: it is large)."""
        index = _opened(self.path, "index.faiss", lambda f: FaissIndex.load(f, self.config.index))
        dim = self.manifest.get("model", {}).get("dim")
        if index.dim != dim or len(index) != self.encoders.n_items:
            raise BundleError(
                f"{self.path}: index holds {len(index)} vectors of dim={index.dim} but the model has "
                f"{self.encoders.n_items} items of dim={dim}; re-run `embrecall train`"
            )
        return index

    def item_vectors(self) -> np.ndarray:
        """The item-tower vectors in item_idx order (read when asked: they are large)."""
        with safe_open(str(self.path / "item_vectors.safetensors"), framework="numpy") as f:
            return f.get_tensor("vectors")

    def vector_rows(self) -> VectorRows:
        """The same vectors, read a block of rows at a time (what fills a live index)."""
        return VectorRows(self.path / "item_vectors.safetensors")

    def query(self, user_id: str, context: dict[str, Any] | None = None) -> UserQuery:
        """The query for a known user from the stored profile (unknown users get an empty history)."""
        items = tuple(self.users.at[user_id, "items"]) if user_id in self.users.index else ()
        ctx = {"timestamp": int(time.time()), **(context or {})}
        return UserQuery(str(user_id), items, ctx)
