"""The item2vec channel: skip-gram word2vec on each user's clicks cut into sessions.

Sessions end after ``session_gap`` seconds of inactivity, so items clicked together in one
visit become each other's context (58.com's session-aware sequences).  Optionally one model per
value of an event column (city, business line), with a model on all events as fallback.  The user
vector is the recency-weighted mean of the last N clicks; with ``category_column`` the history is
split by item category, each category queried on its own and the results merged by a quota
proportional to the category's recency weight (per-category parallel recall).
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

import faiss
import numpy as np
import pandas as pd
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from embrecall.config import Config, Item2VecConfig
from embrecall.data.log import EventLog
from embrecall.errors import DataError, NotFittedError
from embrecall.index.protocol import fetch_depth
from embrecall.models.channel import Candidates, Listed, UserQuery, recent_first, take_top
from embrecall.models.merge import merge_by_quota

__all__ = ["Item2Vec", "session_starts"]


_NO_SESSION = (
    "item2vec found no session with two or more items; increase channels.item2vec.session_gap or check the timestamps"
)


def _write_sessions(fh: TextIO, sequences: Iterable[np.ndarray]) -> int:
    """Append each sequence of two or more items to a corpus file, one line each; returns how many."""
    written = 0
    for seq in sequences:
        if len(seq) >= 2:
            fh.write(" ".join(map(str, seq.tolist())) + "\n")
            written += 1
    return written


def session_starts(users: np.ndarray, timestamps: np.ndarray, gap: int) -> np.ndarray:
    """Boolean (N,) over user/time-sorted events: True where a new session begins."""
    new_user = np.r_[True, users[1:] != users[:-1]]
    long_pause = np.r_[True, np.diff(timestamps) > gap]
    return new_user | long_pause


class _Space:
    """One trained word2vec model: unit item vectors, their catalog ids, an exact IP index."""

    def __init__(self, item_ids: np.ndarray, vectors: np.ndarray):
        self.item_ids = item_ids
        self.vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.position = {item: i for i, item in enumerate(item_ids)}
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))


class Item2Vec(Listed):
    name = "item2vec"

    def __init__(self, cfg: Item2VecConfig | None = None):
        self.cfg = cfg or Item2VecConfig()
        self.spaces_: dict[str | None, _Space] | None = None
        self.category_: dict[str, str] | None = None  # item -> its first category value

    def _word2vec(self, corpus: Path, catalog: np.ndarray) -> _Space:
        """Word2vec over a corpus file of sessions (catalog positions), gensim's fast path: the
        sentences stream from disk, so a log of any size costs the model's memory only."""
        from gensim.models import Word2Vec  # training only: a served bundle reads the vectors

        c = self.cfg
        model = Word2Vec(
            corpus_file=str(corpus),
            vector_size=c.dim,
            window=c.window,
            min_count=c.min_count,
            sg=1,
            sample=c.sample,
            negative=c.negative,
            ns_exponent=c.ns_exponent,
            epochs=c.epochs,
            workers=2,
            seed=c.seed,
        )
        tokens = np.asarray(model.wv.index_to_key, dtype=np.int64)
        return _Space(catalog[tokens], model.wv.vectors.astype(np.float32))

    @classmethod
    def problem(
        cls, settings: Item2VecConfig, counts: pd.Series, items: pd.DataFrame | None, columns: Collection[str]
    ) -> str | None:
        if settings.group_column and settings.group_column not in columns:
            return f"channels.item2vec.group_column '{settings.group_column}' is not an event column"
        if settings.category_column and (items is None or settings.category_column not in items.columns):
            return f"channels.item2vec.category_column '{settings.category_column}' is not an item attribute"
        return None

    def fit(self, log: EventLog, items: pd.DataFrame | None = None) -> Item2Vec:
        """Sessions written part by part to one corpus file (and, with ``group_column``, each to
        its group's file too), then word2vec over each file: a log of any size costs the model's
        memory only."""
        c = self.cfg
        catalog = log.item_counts().index
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as files:
            corpora: dict[str | None, tuple[Path, TextIO]] = {}
            written: dict[str | None, int] = {}

            def corpus(group: str | None) -> TextIO:
                if group not in corpora:
                    path = Path(tmp) / f"sessions-{len(corpora)}.txt"
                    corpora[group] = (path, files.enter_context(path.open("w")))
                return corpora[group][1]

            wanted = None if c.group_column else ["user_id", "item_id", "timestamp"]  # all: a missing group is said
            for ev in log.parts(wanted):
                codes = catalog.get_indexer(ev["item_id"])
                starts = session_starts(ev["user_id"].to_numpy(), ev["timestamp"].to_numpy(), c.session_gap)
                groups = self._groups(ev)
                if groups is not None:
                    starts |= np.r_[True, groups[1:] != groups[:-1]]
                bounds = np.r_[np.flatnonzero(starts), len(ev)]
                sessions = [codes[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
                written[None] = written.get(None, 0) + _write_sessions(corpus(None), sessions)
                if groups is not None:
                    for session, group in zip(sessions, groups[bounds[:-1]]):
                        written[group] = written.get(group, 0) + _write_sessions(corpus(group), [session])
            if not written.get(None):
                raise DataError(_NO_SESSION)
            for _, fh in corpora.values():
                fh.close()
            ids = catalog.to_numpy(dtype=object)
            self.spaces_ = {
                group: self._word2vec(path, ids) for group, (path, _) in corpora.items() if written.get(group)
            }
        self._categories(items)
        return self

    def _groups(self, events: pd.DataFrame) -> np.ndarray | None:
        """Each event's ``group_column`` value (sessions never span two), or None without one."""
        column = self.cfg.group_column
        if not column:
            return None
        if column not in events.columns:
            raise DataError(
                f"channels.item2vec.group_column '{column}' is not an event column; add it to "
                "data.context_columns (a sharded log keeps none: leave group_column out there)",
                column=column,
            )
        return events[column].astype(str).to_numpy()

    def _categories(self, items: pd.DataFrame | None) -> None:
        """Each item's first category value, for per-category recall (``category_column``)."""
        c = self.cfg
        if c.category_column:
            if items is None or c.category_column not in items.columns:
                raise DataError(
                    f"channels.item2vec.category_column '{c.category_column}' is not an item attribute",
                    column=c.category_column,
                )
            self.category_ = items[c.category_column].astype(str).str.split("|").str[0].to_dict()

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Item ids and unit vectors of the all-events model (a pretrained feature for other models)."""
        space = self._spaces()[None]
        return space.item_ids, space.vectors

    def save(self, folder: Path) -> list[str]:
        """Every space's unit vectors (safetensors, stacked) and their items and groups (Parquet);
        the item categories when ``category_column`` is set."""
        spaces = self._spaces()
        save_numpy(
            {"vectors": np.concatenate([s.vectors for s in spaces.values()])}, str(folder / "item2vec.safetensors")
        )
        pd.DataFrame(
            {
                "group": np.concatenate([[g] * len(s.item_ids) for g, s in spaces.items()]).astype(object),
                "item_id": np.concatenate([s.item_ids for s in spaces.values()]),
            }
        ).to_parquet(folder / "item2vec_items.parquet", index=False)
        files = ["item2vec.safetensors", "item2vec_items.parquet"]
        if self.category_ is not None:
            pd.DataFrame({"item_id": list(self.category_), "category": list(self.category_.values())}).to_parquet(
                folder / "item2vec_categories.parquet", index=False
            )
            files.append("item2vec_categories.parquet")
        return files

    @classmethod
    def load(cls, folder: Path, cfg: Config) -> Item2Vec:
        model = cls(cfg.channels.item2vec)
        vectors = load_numpy(str(folder / "item2vec.safetensors"))["vectors"]
        table = pd.read_parquet(folder / "item2vec_items.parquet")
        items = table["item_id"].astype(str).to_numpy(dtype=object)
        rows = table.groupby("group", dropna=False, sort=False).indices  # the all-events space's group is null
        model.spaces_ = {None if pd.isna(g) else str(g): _Space(items[r], vectors[r]) for g, r in rows.items()}
        if (folder / "item2vec_categories.parquet").is_file():
            cats = pd.read_parquet(folder / "item2vec_categories.parquet")
            model.category_ = dict(zip(cats["item_id"].astype(str), cats["category"].astype(str)))
        return model

    def _spaces(self) -> dict[str | None, _Space]:
        if self.spaces_ is None:
            raise NotFittedError("Item2Vec is not fitted yet. Call 'fit' with training events first.")
        return self.spaces_

    def _interests(self, space: _Space, history: Sequence[str]) -> list[tuple[np.ndarray, float]]:
        """(query vector, weight) per interest: one overall, or one per category of the recent clicks."""
        recent = recent_first(tuple(history), self.cfg.history)
        pos = np.fromiter((space.position.get(i, -1) for i in recent), dtype=np.int64, count=len(recent))
        known = pos >= 0
        if not known.any():
            return []
        weights = self.cfg.decay ** np.arange(len(recent))[known]
        vecs = space.vectors[pos[known]]
        if self.category_ is None:
            return [(weights @ vecs, 1.0)]
        cats = np.array([self.category_.get(i, "") for i, ok in zip(recent, known) if ok], dtype=object)
        out = []
        for cat in pd.unique(cats):
            mask = cats == cat
            out.append((weights[mask] @ vecs[mask], float(weights[mask].sum())))
        out.sort(key=lambda t: -t[1])
        return out[: self.cfg.max_categories]

    def _one(self, query: UserQuery, k: int, exclude: Collection[str]) -> Candidates:
        spaces = self._spaces()
        group = str(query.context.get(self.cfg.group_column)) if self.cfg.group_column else None
        space = spaces.get(group, spaces[None])
        interests = self._interests(space, query.history)
        if not interests:
            return Candidates([], np.zeros(0, np.float32), [])
        total = sum(w for _, w in interests)
        quotas = [max(1, round(k * w / total)) for _, w in interests]
        depth = min(len(space.item_ids), fetch_depth(k, len(exclude)))
        queries = np.stack([v / max(np.linalg.norm(v), 1e-12) for v, _ in interests]).astype(np.float32)
        scores, idx = space.index.search(queries, depth)
        lists = [
            take_top(space.item_ids[row[row >= 0]], s[row >= 0], depth, exclude, self.name)
            for row, s in zip(idx, scores)
        ]
        return merge_by_quota(lists, quotas, k)

    def ranked(
        self, queries: Sequence[UserQuery], k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Candidates]:
        return [self._one(q, k, exclude[i] if exclude is not None else ()) for i, q in enumerate(queries)]
