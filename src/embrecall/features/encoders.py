"""Encoders fitted on training data that turn raw feature columns into tower inputs.

Index conventions shared by every encoder and the towers: 0 is "missing / padding" (its
embedding row is zero), 1 is "seen in no training row" (OOV) where a vocabulary exists.
Item ids and history use ``item_idx + 1`` for items seen in training; the catalog may also hold
items never clicked (``features.catalog = "items"``), whose id input is 0 so only their
attributes speak for them.  Everything fitted is saved as JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from embrecall.config import (
    ITEM_HISTORY,
    CategoricalFeature,
    Feature,
    FeaturesConfig,
    HashedFeature,
    ItemIdFeature,
    MultiFeature,
    NumericFeature,
    TextFeature,
    TimeFeature,
)
from embrecall.errors import DataError, NotFittedError

__all__ = ["Encoders", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_MISSING = {"", "nan", "none", "null"}


def _text(values: pd.Series) -> pd.Series:
    """Values as stripped strings, with missing ones as ''."""
    out = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return out.where(~out.str.lower().isin(_MISSING), "")


def _vocab(tokens: pd.Series, min_count: int) -> list[str]:
    counts = tokens[tokens != ""].value_counts(sort=False)
    kept = counts[counts >= min_count]
    return sorted(kept.index.tolist())


def _appended(known: list[str], seen: list[str]) -> list[str]:
    """``known`` followed by the values of ``seen`` it lacks: a vocabulary grown in place."""
    have = set(known)
    return known + [v for v in seen if v not in have]


def _lookup(index: pd.Index, values: pd.Series) -> np.ndarray:
    """0 for missing, 1 for unknown, 2 + position for known values."""
    idx = index.get_indexer(values.to_numpy())
    out = np.where(idx >= 0, idx + 2, 1).astype(np.int64)
    out[(values == "").to_numpy()] = 0
    return out


def _stable_hash(values: pd.Series, buckets: int) -> np.ndarray:
    uniques, inverse = np.unique(values.to_numpy(dtype=str), return_inverse=True)
    hashed = np.array(
        [int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little") % buckets + 2 for u in uniques],
        dtype=np.int64,
    )
    out = hashed[inverse].reshape(-1)
    out[(values == "").to_numpy()] = 0
    return out


# Features fitted on no column of their own (ids, histories, the event time; titles are embedded by a text model).
_NOTHING_TO_FIT = (ItemIdFeature, *ITEM_HISTORY, TimeFeature, TextFeature)


class Encoders:
    """All fitted encoders of one run: ``fit`` learns vocabularies and statistics, the
    ``encode_*`` methods produce the arrays the towers take, keyed by feature name."""

    def __init__(self, spec: FeaturesConfig):
        self.spec = spec
        self.state_: dict[str, dict[str, Any]] | None = None
        self.catalog_: pd.Index | None = None  # item_id of each item_idx
        self.n_trained_ = 0  # catalog positions below this were seen in training events
        self._text: Any = None
        self._position: dict[str, int] | None = None  # item_id -> item_idx, for small lookups
        self._vocab_indexes: dict[str, pd.Index] = {}  # built once per feature, not per request

    # ------------------------------------------------------------------ fitting

    @staticmethod
    def _column(f: Feature, side: str, events: pd.DataFrame, table: pd.DataFrame | None, ids: pd.Index) -> pd.Series:
        """The raw values a feature is fitted on: table rows of the ids seen in training, or event rows."""
        col = f.input_column
        if getattr(f, "source", "table") == "event":
            if col not in events.columns:
                raise DataError(
                    f"feature '{f.name}' reads event column '{col}', which the interactions lack; "
                    f"add it to data.context_columns",
                    column=col,
                )
            return events[col]
        if col == f"{side}_id":
            return pd.Series(ids.to_numpy(), dtype=object)
        if table is None or col not in table.columns:
            have = [] if table is None else list(table.columns)
            raise DataError(
                f"feature '{f.name}' reads {side} column '{col}', but the {side} feature table has "
                f"{have or 'no table'}; fix features.{side} or the data section",
                column=col,
            )
        return table[col].reindex(ids)

    def _check_columns(self, events: pd.DataFrame, users: pd.DataFrame | None, items: pd.DataFrame | None) -> None:
        """Every feature whose column the data lacks, named together (not the first one alone)."""
        missing: list[str] = []
        for side, features, table in (("user", self.spec.user, users), ("item", self.spec.item, items)):
            for f in features:
                col = f.input_column
                if isinstance(f, _NOTHING_TO_FIT):
                    continue
                if getattr(f, "source", "table") == "event":
                    if col not in events.columns:
                        missing.append(
                            f"features.{side} '{f.name}' reads event column '{col}' (add it to data.context_columns)"
                        )
                elif col != f"{side}_id" and (table is None or col not in table.columns):
                    have = f"it has {list(table.columns)}" if table is not None else f"there is no {side} table"
                    missing.append(f"features.{side} '{f.name}' reads {side} column '{col}' ({have})")
        if missing:
            raise DataError(
                f"{len(missing)} feature(s) read columns the data does not have: "
                + "; ".join(missing)
                + ". Remove those features from the config, or point the data section at the columns"
            )

    def fit(self, events: pd.DataFrame, users: pd.DataFrame | None, items: pd.DataFrame | None) -> Encoders:
        """Fit on training ``events``; the catalog is every item they contain, then (with
        ``features.catalog = "items"``) the item table's other items."""
        return self.fit_ids(
            pd.Index(pd.unique(events["item_id"]), dtype=object),
            pd.Index(pd.unique(events["user_id"]), dtype=object),
            events,
            users,
            items,
        )

    def fit_ids(
        self,
        trained: pd.Index,
        user_ids: pd.Index,
        events: pd.DataFrame,
        users: pd.DataFrame | None,
        items: pd.DataFrame | None,
    ) -> Encoders:
        """Fit on the ``trained`` items (catalog order) and ``user_ids`` of a training log, and on
        ``events`` for event-sourced features: a sharded log passes its ids without its rows."""
        self._check_columns(events, users, items)
        self.n_trained_ = len(trained)
        if self.spec.catalog == "items" and items is not None:
            trained = trained.append(items.index.difference(trained, sort=False).astype(object))
        self.catalog_ = trained
        state: dict[str, dict[str, Any]] = {}
        for side, feats, table, ids in (
            ("user", self.spec.user, users, user_ids),
            ("item", self.spec.item, items, self.catalog_),
        ):
            for f in feats:
                key = f"{side}.{f.name}"
                if isinstance(f, _NOTHING_TO_FIT):
                    state[key] = {}
                    continue
                raw = self._column(f, side, events, table, ids)
                if isinstance(f, CategoricalFeature):
                    state[key] = {"vocab": _vocab(_text(raw), f.min_count)}
                elif isinstance(f, MultiFeature):
                    tokens = _text(raw).str.split(f.sep, regex=False).explode().str.strip()
                    state[key] = {"vocab": _vocab(tokens.fillna(""), f.min_count)}
                elif isinstance(f, NumericFeature):
                    state[key] = self._fit_numeric(f, raw)
                else:  # HashedFeature: nothing to learn
                    state[key] = {}
        self.state_ = state
        return self

    def grown(self, fresh: Encoders) -> Encoders:
        """These encoders extended by ``fresh`` ones fitted on a newer log (training on from a
        version): items, users and feature values seen first there get new positions after the
        known ones, so every row a parent model learned keeps its index; numeric statistics and
        bucket edges stay the parent's, so a known input encodes as before."""
        state, catalog = self._state(), self.catalog
        trained = catalog[: self.n_trained_]
        new_trained = fresh.catalog[: fresh.n_trained_]
        out = Encoders(self.spec)
        out.state_ = {
            key: {**st, "vocab": _appended(st["vocab"], fresh._state()[key]["vocab"])} if "vocab" in st else st
            for key, st in state.items()
        }
        out.catalog_ = trained.append(new_trained.difference(trained, sort=False))
        out.n_trained_ = len(out.catalog_)
        untrained = fresh.catalog[fresh.n_trained_ :].append(catalog[self.n_trained_ :])
        out.catalog_ = out.catalog_.append(untrained.drop_duplicates().difference(out.catalog_, sort=False))
        return out

    @staticmethod
    def _fit_numeric(f: NumericFeature, raw: pd.Series) -> dict[str, Any]:
        x = pd.to_numeric(raw, errors="coerce").dropna().to_numpy(np.float64)
        if len(x) == 0:
            raise DataError(
                f"numeric feature '{f.name}' has no numeric value in the training data", column=f.input_column
            )
        if f.transform == "bucketize":
            edges = np.unique(np.quantile(x, np.linspace(0, 1, f.buckets + 1)[1:-1]))
            return {"edges": edges.tolist()}
        if f.transform == "log_standardize":
            x = np.log1p(np.maximum(x, 0.0))
        std = float(x.std())
        return {"mean": float(x.mean()), "std": std if std > 0 else 1.0}

    # ------------------------------------------------------------------ sizes and state

    def _state(self) -> dict[str, dict[str, Any]]:
        if self.state_ is None or self.catalog_ is None:
            raise NotFittedError("Encoders is not fitted yet. Call 'fit' with training events first.")
        return self.state_

    @property
    def catalog(self) -> pd.Index:
        """The item id of each item_idx."""
        self._state()
        return cast(pd.Index, self.catalog_)  # _state refused None

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    def input_size(self, side: str, f: Feature) -> int:
        """Rows of the embedding table a feature needs (0 for features fed as raw numbers)."""
        st = self._state()[f"{side}.{f.name}"]
        if isinstance(f, (ItemIdFeature, *ITEM_HISTORY)):
            return self.n_trained_ + 1
        if isinstance(f, (CategoricalFeature, MultiFeature)):
            return len(st["vocab"]) + 2
        if isinstance(f, HashedFeature):
            return f.buckets + 2
        if isinstance(f, TimeFeature):
            return (24 if f.part == "hour" else 7) + 1
        if isinstance(f, NumericFeature):
            return len(st["edges"]) + 2 if f.transform == "bucketize" else 0
        if isinstance(f, TextFeature):
            return 0
        raise TypeError(f"unknown feature type {type(f).__name__}")

    def positions(self, item_ids: list[str] | pd.Index) -> np.ndarray:
        """item_idx of each id, -1 if not in the catalog.  Few ids go through a dict: pandas'
        ``get_indexer`` costs ~15 ms per call on a 1M-item object index, whatever the batch size."""
        catalog = self.catalog_
        if catalog is None:
            raise NotFittedError("Encoders is not fitted yet. Call 'fit' with training events first.")
        if len(item_ids) >= 10_000:
            return catalog.get_indexer(pd.Index(list(item_ids), dtype=object))
        get = self.item_lookup().get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def item_lookup(self) -> dict[str, int]:
        """item_id -> item_idx as a dict, built on first use (about 0.5 s at 1M items): a server
        calls this while loading, so that no request pays for it."""
        if self._position is None:
            self._state()  # NotFittedError before fit
            self._position = {item: i for i, item in enumerate(self.catalog_)}  # type: ignore[arg-type]
        return self._position

    @staticmethod
    def is_profile(f: Feature) -> bool:
        """True for user features read from the user table (fixed per user), False for those read
        from the event or request (time, context columns, recent items)."""
        return (
            not isinstance(f, (*ITEM_HISTORY, TimeFeature, ItemIdFeature)) and getattr(f, "source", "table") != "event"
        )

    @property
    def context_columns(self) -> list[str]:
        """The event columns user features read: ``timestamp`` and each event-sourced feature's column."""
        return ["timestamp"] + [f.input_column for f in self.spec.user if getattr(f, "source", "table") == "event"]

    def context_frame(self, contexts: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """One row per context with the context columns (missing ones empty, ``timestamp`` as int, 0 if absent)."""
        frame = pd.DataFrame([dict(c) for c in contexts]).reindex(columns=self.context_columns)
        frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce").fillna(0).astype(np.int64)
        return frame

    def history_len(self) -> int:
        return max((f.max_len for f in self.spec.user if isinstance(f, ITEM_HISTORY)), default=0)

    # ------------------------------------------------------------------ encoding

    def _vocab_index(self, side: str, f: Feature) -> pd.Index:
        key = f"{side}.{f.name}"
        if key not in self._vocab_indexes:
            self._vocab_indexes[key] = pd.Index(self._state()[key]["vocab"], dtype=object)
        return self._vocab_indexes[key]

    def _encode(self, side: str, f: Feature, raw: pd.Series) -> np.ndarray:
        st = self._state()[f"{side}.{f.name}"]
        if isinstance(f, CategoricalFeature):
            return _lookup(self._vocab_index(side, f), _text(raw))
        if isinstance(f, HashedFeature):
            return _stable_hash(_text(raw), f.buckets)
        if isinstance(f, MultiFeature):
            index = self._vocab_index(side, f)
            rows = _text(raw).str.split(f.sep, regex=False)
            out = np.zeros((len(raw), f.max_len), dtype=np.int64)
            flat = rows.explode()
            tokens = flat.fillna("").astype(str).str.strip()
            codes = _lookup(index, tokens)
            row_of = np.repeat(np.arange(len(rows)), rows.str.len().to_numpy(dtype=np.int64))
            pos = pd.Series(row_of).groupby(row_of).cumcount().to_numpy()
            keep = (pos < f.max_len) & (codes > 0)
            out[row_of[keep], pos[keep]] = codes[keep]
            return out
        if isinstance(f, NumericFeature):
            x = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
            if f.transform == "bucketize":
                codes = np.searchsorted(np.asarray(st["edges"]), x, side="right") + 1
                return np.where(np.isnan(x), 0, codes).astype(np.int64)
            if f.transform == "log_standardize":
                x = np.log1p(np.maximum(x, 0.0))
            z = (x - st["mean"]) / st["std"]
            return np.nan_to_num(z, nan=0.0).astype(np.float32)
        if isinstance(f, TextFeature):
            from embrecall.features.text import TextEmbedder

            self._text = self._text or TextEmbedder()
            texts = _text(raw)
            vectors = self._text.encode(texts.tolist())
            vectors[(texts == "").to_numpy()] = 0.0
            return vectors
        raise TypeError(f"feature '{f.name}' of kind {f.kind} is not encoded from a column")

    def encode_items(self, items: pd.DataFrame | None, item_ids: pd.Index | None = None) -> dict[str, np.ndarray]:
        """Item tower inputs for ``item_ids`` (default: the whole catalog, in item_idx order)."""
        self._state()
        ids = self.catalog_ if item_ids is None else item_ids
        out: dict[str, np.ndarray] = {}
        for f in self.spec.item:
            if isinstance(f, ItemIdFeature):
                idx = self.positions(ids)
                out[f.name] = np.where((idx >= 0) & (idx < self.n_trained_), idx + 1, 0).astype(np.int64)
            else:
                out[f.name] = self._encode("item", f, self._column(f, "item", pd.DataFrame(), items, ids))
        return out

    def encode_users(
        self,
        user_ids: pd.Index,
        users: pd.DataFrame | None,
        context: pd.DataFrame,
        history: np.ndarray | None,
        features: list[Feature] | None = None,
    ) -> dict[str, np.ndarray]:
        """User tower inputs.

        ``context``: one row per user with the event columns (``timestamp`` and context columns);
        ``history``: (N, L) int64 of ``item_idx + 1``, most recent first, 0-padded; None leaves
        the history features out (training fills them batch by batch); ``features``: the user
        features to encode (default all), so a server can encode stored profiles once.
        """
        out: dict[str, np.ndarray] = {}
        for f in self.spec.user if features is None else features:
            if isinstance(f, ITEM_HISTORY):
                if history is not None:
                    out[f.name] = np.ascontiguousarray(history[:, : f.max_len])
            elif isinstance(f, TimeFeature):
                ts = pd.to_datetime(context["timestamp"].to_numpy(), unit="s", utc=True)
                part = ts.hour if f.part == "hour" else ts.dayofweek
                out[f.name] = np.asarray(part, dtype=np.int64) + 1
            else:
                raw = self._column(f, "user", context, users, user_ids)
                out[f.name] = self._encode("user", f, raw)
        return out

    def history_matrix(self, histories: Sequence[Sequence[str]] | Sequence[np.ndarray]) -> np.ndarray:
        """(N, L) ``item_idx + 1`` of each user's raw item ids (oldest first), most recent first;
        items outside the trained catalog are skipped.  One catalog lookup for the whole batch."""
        L = self.history_len()
        out = np.zeros((len(histories), max(L, 1)), dtype=np.int64)
        lengths = [len(h) for h in histories]
        flat = [item for h in histories for item in h]
        idx = self.positions(flat)
        known = (idx >= 0) & (idx < self.n_trained_)
        start = 0
        for row, n in enumerate(lengths):
            seg = idx[start : start + n][known[start : start + n]][::-1][:L] + 1
            out[row, : len(seg)] = seg
            start += n
        return out

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "state": self._state(),
            "n_trained": self.n_trained_,
            "catalog": [str(x) for x in self.catalog],
        }

    @classmethod
    def from_json(cls, spec: FeaturesConfig, data: dict[str, Any]) -> Encoders:
        if data.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"encoders saved with format {data.get('format_version')}, this embrecall reads "
                f"format {FORMAT_VERSION}; re-run `embrecall train`"
            )
        enc = cls(spec)
        enc.state_ = data["state"]
        enc.catalog_ = pd.Index(data["catalog"], dtype=object)
        enc.n_trained_ = int(data["n_trained"])
        return enc
