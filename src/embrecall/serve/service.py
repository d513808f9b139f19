"""One bundle made live: its channels over one live item index (FAISS in process, or Milvus),
answering recall requests one at a time or in batches, merged as its config says.  A request keeps the
version it started with, so a swap never mixes a user tower of one version with an index of
another.  Evaluation runs the same object (``ServedChannel``), so the figure a user reads is the
figure the service answers with."""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from embrecall.channel_table import TWO_TOWER
from embrecall.errors import DataError
from embrecall.export import Bundle
from embrecall.features.profiles import UserProfiles
from embrecall.index.live import LiveIndex
from embrecall.index.milvus_index import MilvusIndex
from embrecall.index.protocol import Filters, filterable_columns
from embrecall.models.channel import Candidates, Channel, History, Timings, UserQuery
from embrecall.models.entities import Entities, EntityRecall
from embrecall.models.merge import Merged, MergeRule, fill, merge_by_quota
from embrecall.models.tower_channel import TowerChannel
from embrecall.serve.cache import VectorCache
from embrecall.serve.events import Histories, Stamped
from embrecall.serve.schemas import RecallRequest, RecallResponse

__all__ = ["ServingVersion", "ServedChannel", "Ask"]


@dataclass
class Ask:
    """One request as the version's channels see it; ``parallel``: (attribute, groups) for
    category-parallel recall, which the version turns into one filtered ask per group before any
    channel runs."""

    query: UserQuery
    k: int
    filters: Filters = field(default_factory=dict)
    exclude: set[str] = field(default_factory=set)
    parallel: tuple[str, int] | None = None


@dataclass
class _Plan:
    """One request on its way through a batch."""

    req: RecallRequest
    ask: Ask
    quotas: dict[str, float]


class ServingVersion:
    def __init__(
        self,
        bundle: Bundle | Path | str,
        cache: VectorCache | None = None,
        quotas: Mapping[str, float] | None = None,
        milvus_uri: str | None = None,
        histories: Histories | None = None,
    ):
        """``milvus_uri``: serve from a Milvus collection of this version's items (created on first use)
        instead of the in-process FAISS index; ``histories``: users' events since (see ``serve.events``)."""
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.version = self.bundle.version
        self.profiles = UserProfiles(self.bundle.encoders, self.bundle.users)
        catalog = list(self.bundle.encoders.catalog)
        filterable = filterable_columns(self.bundle.items)
        self.index: LiveIndex | MilvusIndex
        if milvus_uri:
            collection = "embrecall_" + re.sub(r"\W", "_", self.version)
            self.index = MilvusIndex.build(
                milvus_uri,
                collection,
                catalog,
                self.bundle.item_vectors(),
                self.bundle.items,
                filterable,
                self.bundle.config.index,
            )
        else:
            self.index = LiveIndex(
                catalog,
                self.bundle.vector_rows(),
                self.bundle.items,
                self.bundle.config.index,
                filterable,
                index=None if self.bundle.config.index.kind == "flat" else self.bundle.index().index,
            )
        self.cache = cache or VectorCache()
        self.tower = TowerChannel(
            self.profiles,
            self.bundle.user_tower,
            self.index,
            self.cache,
            self.version,
            self.bundle.config.model.interests,
        )
        self.channels: dict[str, Channel] = {
            TWO_TOWER: self.tower,
            **{name: c.over(self.index) for name, c in self.bundle.channels.items()},
        }
        fallback = self.bundle.config.channels.fallback
        self.fallback = fallback if fallback in self.channels else None
        self.quotas = dict(quotas or self.bundle.config.channels.serve)
        self.rule = MergeRule.of(self.bundle.config.channels)
        self.histories = histories
        self.until = int(self.bundle.manifest["data"].get("until", 0))  # the newest event training saw
        self._entities: dict[str, EntityRecall] = {}

    # ------------------------------------------------------------------ items

    def embed_items(self, changes: Mapping[str, Mapping[str, object]]) -> np.ndarray:
        """The item tower's vectors for items described by their attributes (new or changed), in one
        run; attributes the item tower reads but a change leaves out count as missing."""
        columns = [f.input_column for f in self.bundle.config.features.item if f.input_column != "item_id"]
        ids = pd.Index(list(changes), dtype=object)
        table = pd.DataFrame([dict(a) for a in changes.values()], index=ids)
        table = table.reindex(columns=list(dict.fromkeys([*table.columns, *columns])))
        return self.bundle.item_tower(self.bundle.encoders.encode_items(table, ids))

    def upsert_items(self, changes: Mapping[str, Mapping[str, object]]) -> None:
        """Add or replace items (embedded together, 4096 at a time); every vector is checked before
        any is indexed."""
        pairs = list(changes.items())
        chunks = [dict(pairs[i : i + 4096]) for i in range(0, len(pairs), 4096)]
        vectors = np.concatenate([self.embed_items(c) for c in chunks]) if chunks else np.zeros((0, 0), np.float32)
        bad = [item for item, v in zip(changes, vectors) if not np.isfinite(v).all()]
        if bad:  # a NaN vector would be scored NaN and answered as null
            raise DataError(f"items {bad[:5]}: their attributes give non-finite vectors; check their values")
        for (item_id, attributes), vector in zip(changes.items(), vectors):
            self.index.upsert(item_id, vector, attributes)

    # ------------------------------------------------------------------ entities

    def entity_recall(self, attribute: str) -> EntityRecall:
        """Entity recall over an item attribute, over the version's own item vectors and item table
        (so items changed since it was trained move it only in the next version)."""
        if attribute not in self._entities:
            entities = Entities.of(attribute, self.bundle.items, list(self.bundle.encoders.catalog))
            self._entities[attribute] = EntityRecall(
                entities, self.tower.user_vectors, self._trained_vectors, self.bundle.config.train.temperature
            )
        return self._entities[attribute]

    @cached_property
    def _trained_vectors(self) -> np.ndarray:
        """The version's item vectors in catalog order, read once for every attribute's entity recall."""
        return self.bundle.item_vectors()

    def _parallel(self, ask: Ask) -> list[Ask]:
        """Category-parallel recall (58.com): the user's top groups of the attribute by entity
        recall, each asked for on its own, then the plain ask, which only fills the slots small
        groups leave empty.  The ask's own filters apply to every part: on the parallel attribute
        itself, only the groups it accepts are asked for."""
        attribute, groups = ask.parallel  # type: ignore[misc]
        accepted = set(ask.filters.get(attribute, ()))
        recall = self.entity_recall(attribute)
        ranked = recall.recommend([ask.query], len(recall.entities.values) if accepted else groups)[0].item_ids
        top = [value for value in ranked if not accepted or value in accepted][:groups]
        plain = Ask(ask.query, ask.k, ask.filters, ask.exclude)
        return [*(Ask(ask.query, ask.k, {**ask.filters, attribute: [value]}, ask.exclude) for value in top), plain]

    # ------------------------------------------------------------------ recall

    def history(
        self, user_id: str, recent_items: Sequence[str] = (), events: Sequence[Stamped] | None = None
    ) -> History:
        """The user's stored history, their events since training (``events``: as the event store
        holds them; read from it when not given), then the items the request adds."""
        if events is None:
            events = self.histories.recent([user_id])[0] if self.histories is not None else ()
        return self.profiles.history(user_id) + tuple(i for t, i in events if t > self.until) + tuple(recent_items)

    def _plan(self, req: RecallRequest, events: Sequence[Stamped]) -> _Plan:
        """What a request asks for, checked against this version (a DataError says what is wrong)."""
        unknown = [
            f
            for f in [*req.filters, *([req.parallel.attribute] if req.parallel else [])]
            if f not in self.index.filterable
        ]
        if unknown:
            raise DataError(f"cannot filter on {unknown}; filterable attributes: {self.index.filterable}")
        if req.target != "item" and req.target not in self.index.filterable:
            raise DataError(
                f"cannot recall '{req.target}': targets are 'item' or an item attribute of {self.index.filterable}"
            )
        quotas = dict(req.quotas or self.quotas)
        missing = [c for c, share in quotas.items() if share > 0 and c not in self.channels]
        if missing:
            raise DataError(f"quotas name {missing}; version {self.version} serves {list(self.channels)}")
        history = self.history(req.user_id, req.recent_items, events)
        parallel = (req.parallel.attribute, req.parallel.groups) if req.parallel else None
        return _Plan(
            req,
            Ask(
                UserQuery(req.user_id, history, req.context),
                req.k,
                req.filters,
                set(history) | set(req.exclude),
                parallel,
            ),
            quotas,
        )

    def answer(self, asks: Sequence[Ask], quotas: Sequence[Mapping[str, float]]) -> tuple[list[Candidates], dict]:
        """Each ask's merged list (``models.merge.Merged``: the channels with a share, merged by the
        version's rule, the fallback channel filling the slots they left empty: a strict filter, a
        cold user).  Asks with the same quotas and k run together, so each channel runs once for
        all of them.  Returns the lists and the batch's stage timings (ms)."""
        if any(a.parallel for a in asks):
            return self._answer_parallel(asks, quotas)
        timings: dict[str, float] = {}
        groups: dict[tuple[tuple[tuple[str, float], ...], int], list[int]] = {}
        for i, (ask, weights) in enumerate(zip(asks, quotas)):
            groups.setdefault((tuple(weights.items()), ask.k), []).append(i)
        fallback = self.channels[self.fallback] if self.fallback else None
        out: list[Candidates] = [Candidates([], np.zeros(0, np.float32), [])] * len(asks)
        for (pairs, k), rows in groups.items():
            found = Merged(self.channels, dict(pairs), self.rule, fallback).recommend(
                [asks[i].query for i in rows],
                k,
                [asks[i].exclude for i in rows],
                [asks[i].filters for i in rows],
                timings,
            )
            for i, merged in zip(rows, found):
                out[i] = merged
        return out, timings

    def _answer_parallel(
        self, asks: Sequence[Ask], quotas: Sequence[Mapping[str, float]]
    ) -> tuple[list[Candidates], dict]:
        """``answer`` with each category-parallel ask split into its groups' asks, answered together
        and merged back in equal shares (its plain ask only filling the slots they leave empty)."""
        t = time.perf_counter()
        parts = [self._parallel(a) if a.parallel else [a] for a in asks]
        entities = (time.perf_counter() - t) * 1000
        flat, each = [p for ps in parts for p in ps], [q for ps, q in zip(parts, quotas) for _ in ps]
        found, timings = self.answer(flat, each)
        merged, start = [], 0
        for ask, ps in zip(asks, parts):
            got = found[start : start + len(ps)]
            groups = got[:-1] if ask.parallel else got
            merged.append(fill(merge_by_quota(groups, [1.0] * len(groups), ask.k), got[-1], ask.k))
            start += len(ps)
        return merged, {"entities": entities, **timings}

    def recall(self, req: RecallRequest) -> RecallResponse:
        answer = self.recall_many([req])[0]
        if isinstance(answer, DataError):
            raise answer
        return answer

    def recall_many(self, reqs: Sequence[RecallRequest]) -> list[RecallResponse | DataError]:
        """Answer several requests with one run of each channel; each request's error (an unknown
        filter, a quota for a channel this version lacks) is its own answer.  Stage timings are
        the batch's: what each of its requests waited for."""
        t0 = time.perf_counter()
        recent = self.histories.recent([r.user_id for r in reqs]) if self.histories is not None else [[]] * len(reqs)
        plans: list[_Plan | DataError] = []
        for req, events in zip(reqs, recent):
            try:
                plans.append(self._plan(req, events))
            except DataError as err:
                plans.append(err)
        good = [p for p in plans if isinstance(p, _Plan)]
        profile = (time.perf_counter() - t0) * 1000
        items = [p for p in good if p.req.target == "item"]
        found, timings = self.answer([p.ask for p in items], [p.quotas for p in items])
        t, lists = time.perf_counter(), iter(found)
        merged = [
            next(lists)
            if p.req.target == "item"
            else self.entity_recall(p.req.target).recommend([p.ask.query], p.req.k)[0]
            for p in good
        ]
        if len(items) < len(good):
            timings["entities"] = timings.get("entities", 0.0) + (time.perf_counter() - t) * 1000
        timings = {"profile": profile, **timings, "total": (time.perf_counter() - t0) * 1000}
        answers = iter(self._response(p, m, timings) for p, m in zip(good, merged))
        return [p if isinstance(p, DataError) else next(answers) for p in plans]

    def _response(self, p: _Plan, merged: Candidates, timings: dict[str, float]) -> RecallResponse:
        items = [
            {"item_id": i, "score": s, "channel": c}
            for i, s, c in zip(merged.item_ids, merged.scores.tolist(), merged.channels)
        ]
        known = bool(p.ask.query.history) or p.req.user_id in self.profiles
        # Built from values this method made: validating them again would cost ~20 µs per 100 items
        # (model_construct keeps the dicts as they are; they serialise as RecalledItem would).
        return RecallResponse.model_construct(
            user_id=p.req.user_id,
            items=items,  # type: ignore[arg-type]
            version=self.version,
            cold_start=not known,
            timings_ms=dict(timings),
        )


class ServedChannel:
    """A served version as a ``Channel`` with fixed quotas: what ``evaluate --bundle``, ``recommend``
    and the gate's figures measure."""

    def __init__(
        self, version: ServingVersion, quotas: Mapping[str, float], name: str, parallel: tuple[str, int] | None = None
    ):
        """``parallel``: (attribute, groups) to answer as category-parallel recall."""
        self.version, self.quotas, self.name, self.parallel = version, dict(quotas), name, parallel

    def recommend(
        self,
        queries: Sequence[UserQuery],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        filters: Sequence[Filters] | None = None,
        timings: Timings | None = None,
    ) -> list[Candidates]:
        asks = [
            Ask(
                q,
                k,
                dict(filters[i]) if filters is not None else {},
                set(exclude[i]) if exclude is not None else set(),
                self.parallel,
            )
            for i, q in enumerate(queries)
        ]
        found, spent = self.version.answer(asks, [self.quotas] * len(asks))
        if timings is not None:
            timings.update(spent)
        return found
