"""The item index in Milvus, through pymilvus: for catalogs or traffic beyond one machine.

The same code reaches an embedded milvus-lite database (``uri`` a local file path, what the
tests use) or a Milvus server or cluster (``uri`` like ``http://host:19530``).  One collection
per bundle version: primary key ``item_id``, the vector, and each filterable attribute as an
array of strings (multi-valued attributes split on '|'), so filters become Milvus expressions
evaluated inside the search.  A read that follows a change this process made waits for it
(strong consistency: about 200 ms on a Milvus 2.3 server, the next time tick), so a change is
searchable when ``upsert`` or ``delete`` returns; every other read waits for nothing (session
consistency), where strong consistency on every search cost each one those 200 ms.  Each replica
of the service applies every change from the feed itself, so each sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from embrecall.config import IndexConfig
from embrecall.errors import BundleError, ConfigError, DataError
from embrecall.index.protocol import Filters, attribute_values, fetch_depth
from embrecall.progress import step

__all__ = ["MilvusIndex"]

MAX_ID_LENGTH = 512
MAX_VALUES = 64  # values per attribute of one item
MAX_VALUE_LENGTH = 256
_MAX_LIMIT = 16_384  # the most results one Milvus search returns
# Below this many items, rows searched one by one are as fast as an index, and a flush costs seconds.
_FLUSH_FROM = 10_000
_ID_FIELD, _VECTOR_FIELD = "item_id", "vector"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def _literal(values: Collection[str]) -> str:
    """A Milvus expression list of string literals (JSON escaping is what Milvus parses)."""
    return "[" + ",".join(json.dumps(str(v), ensure_ascii=False) for v in values) + "]"


def _client(uri: str, token: str):
    try:
        from pymilvus import MilvusClient
    except ImportError as err:
        raise ConfigError("the Milvus index backend needs pymilvus: pip install 'embrecall[milvus]'") from err
    return MilvusClient(uri=uri, token=token)


class MilvusIndex:
    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        filterable: Sequence[str] = (),
        cfg: IndexConfig | None = None,
        token: str = "",
    ):
        """Open ``collection`` at ``uri``, creating it (empty) if it does not exist."""
        for name in (collection, *filterable):
            if not _NAME.match(name) or name in (_ID_FIELD, _VECTOR_FIELD):
                raise ConfigError(
                    f"{name!r} cannot name a Milvus collection or field: use letters, digits and "
                    f"'_', not starting with a digit, and not {_ID_FIELD!r} or {_VECTOR_FIELD!r}"
                )
        self.uri, self.collection, self.dim, self.token = uri, collection, dim, token
        self.cfg = cfg or IndexConfig()
        self._filterable = list(filterable)
        self._changed = False  # a change of this process no read has waited for yet
        self.client = _client(uri, token)
        if self.client.has_collection(collection):
            self._check_schema()
        else:
            self._create()

    def _create(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(_ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
        schema.add_field(_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        for name in self._filterable:
            schema.add_field(
                name,
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=MAX_VALUES,
                max_length=MAX_VALUE_LENGTH,
            )
        kind, params = {
            "flat": ("FLAT", {}),
            "hnsw": ("HNSW", {"M": self.cfg.hnsw_m, "efConstruction": self.cfg.ef_construction}),
            "ivf": ("IVF_FLAT", {"nlist": self.cfg.ivf_nlist or 1024}),
            "ivf_sq8": ("IVF_SQ8", {"nlist": self.cfg.ivf_nlist or 1024}),
        }[self.cfg.kind]
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name=_VECTOR_FIELD, index_type=kind, metric_type="IP", params=params)
        self.client.create_collection(
            self.collection, schema=schema, index_params=index_params, consistency_level="Session"
        )

    def _check_schema(self) -> None:
        fields = {f["name"]: f for f in self.client.describe_collection(self.collection)["fields"]}
        dim = int(fields.get(_VECTOR_FIELD, {}).get("params", {}).get("dim", -1))
        missing = [n for n in self._filterable if n not in fields]
        if dim != self.dim or missing:
            raise BundleError(
                f"Milvus collection {self.collection!r} at {self.uri} holds dim={dim} vectors and "
                f"fields {sorted(fields)}; expected dim={self.dim} and {self._filterable}; "
                "drop it or use another collection name"
            )

    @classmethod
    def build(
        cls,
        uri: str,
        collection: str,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        attributes: pd.DataFrame | None,
        filterable: Sequence[str] = (),
        cfg: IndexConfig | None = None,
        token: str = "",
        batch: int = 5_000,
        show_progress: bool = False,
    ) -> MilvusIndex:
        """A collection holding exactly ``item_ids`` with ``vectors``; an existing collection of that
        name which already holds as many items is reused (another replica built it)."""
        index = cls(uri, collection, vectors.shape[1], filterable, cfg, token)
        if len(index) == len(item_ids):
            return index
        table = attributes.reindex(pd.Index(list(item_ids), dtype=object)) if attributes is not None else None
        records = table.to_dict("records") if table is not None else [{}] * len(item_ids)
        with step(f"inserting {len(item_ids):,} items into Milvus collection {collection!r}", show_progress):
            for start in range(0, len(item_ids), batch):
                end = min(start + batch, len(item_ids))
                index.client.upsert(
                    collection, [index._row(item_ids[i], vectors[i], records[i]) for i in range(start, end)]
                )
            if len(item_ids) >= _FLUSH_FROM:  # sealed rows are searched through the index, growing ones one by one
                index.client.flush(collection)
        return index

    def _row(self, item_id: str, vector: np.ndarray, attributes: Mapping[str, object]) -> dict:
        item_id = str(item_id)
        if not item_id or len(item_id.encode()) > MAX_ID_LENGTH:
            raise DataError(f"item id {item_id[:80]!r} must be 1 to {MAX_ID_LENGTH} bytes for the Milvus index")
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise BundleError(f"item vector has dim={v.shape[0]}, the index holds dim={self.dim}")
        row: dict = {_ID_FIELD: item_id, _VECTOR_FIELD: v.tolist()}
        for name in self._filterable:
            values = attribute_values(attributes.get(name))
            if len(values) > MAX_VALUES or any(len(x.encode()) > MAX_VALUE_LENGTH for x in values):
                raise DataError(
                    f"item {item_id!r}: attribute {name!r} has more than {MAX_VALUES} values or one "
                    f"longer than {MAX_VALUE_LENGTH} bytes, which the Milvus index cannot hold"
                )
            row[name] = values
        return row

    # ------------------------------------------------------------------ the protocol

    @property
    def filterable(self) -> list[str]:
        return list(self._filterable)

    def _consistency(self) -> str:
        """Strong for the first read after this process's own change, session otherwise."""
        changed, self._changed = self._changed, False
        return "Strong" if changed else "Session"

    def __len__(self) -> int:
        rows = self.client.query(
            self.collection, filter="", output_fields=["count(*)"], consistency_level=self._consistency()
        )
        return int(rows[0]["count(*)"])

    def __contains__(self, item_id: str) -> bool:
        found = self.client.get(
            self.collection, ids=[str(item_id)], output_fields=[_ID_FIELD], consistency_level=self._consistency()
        )
        return bool(found)

    def upsert(self, item_id: str, vector: np.ndarray, attributes: Mapping[str, object] | None = None) -> None:
        self.client.upsert(self.collection, [self._row(item_id, vector, attributes or {})])
        self._changed = True

    def delete(self, item_id: str) -> bool:
        if item_id not in self:
            return False
        self.client.delete(self.collection, ids=[str(item_id)])
        self._changed = True
        return True

    def _expression(self, filters: Filters | None, exclude: Collection[str]) -> str:
        parts = [f"array_contains_any({name}, {_literal(values)})" for name, values in (filters or {}).items()]
        if exclude:
            parts.append(f"{_ID_FIELD} not in {_literal(exclude)}")
        return " and ".join(parts)

    def search(
        self, query: np.ndarray, k: int, filters: Filters | None = None, exclude: Collection[str] = ()
    ) -> tuple[list[str], np.ndarray]:
        """The top ``k``; excluded items are asked for beyond ``k`` and dropped here, not named in
        the expression: a server evaluates ``item_id not in [...]`` on every row (about 300 ms a
        search at a million items), while a deeper search costs next to nothing."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if k <= 0:
            return [], np.zeros(0, np.float32)
        depth = fetch_depth(k, len(exclude))
        here = depth <= _MAX_LIMIT
        params = {"ef": max(self.cfg.ef_search, depth)} if self.cfg.kind == "hnsw" else {"nprobe": self.cfg.nprobe}
        hits = self.client.search(
            self.collection,
            data=[q.tolist()],
            limit=depth if here else k,
            filter=self._expression(filters, () if here else exclude),
            search_params={"metric_type": "IP", "params": params},
            output_fields=[_ID_FIELD],
            consistency_level=self._consistency(),
        )[0]
        dropped = set(exclude) if here else set()
        kept = [h for h in hits if h[_ID_FIELD] not in dropped][:k]
        return [h[_ID_FIELD] for h in kept], np.array([h["distance"] for h in kept], dtype=np.float32)

    def search_many(
        self, queries: np.ndarray, ks: Sequence[int], excludes: Sequence[Collection[str]]
    ) -> list[tuple[list[str], np.ndarray]]:
        """One Milvus search per query: each carries its own exclusion expression."""
        return [self.search(q, k, None, ex) for q, k, ex in zip(np.asarray(queries), ks, excludes)]

    def vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        wanted = [str(i) for i in item_ids]
        out = np.full((len(wanted), self.dim), np.nan, dtype=np.float32)
        if wanted:
            rows = self.client.get(
                self.collection, ids=wanted, output_fields=[_VECTOR_FIELD], consistency_level=self._consistency()
            )
            at = {i: p for p, i in enumerate(wanted)}
            for row in rows:
                out[at[row[_ID_FIELD]]] = row[_VECTOR_FIELD]
        return out

    def select(
        self, item_ids: Sequence[str], filters: Filters | None = None, exclude: Collection[str] = ()
    ) -> np.ndarray:
        wanted = [str(i) for i in item_ids]
        expression = " and ".join(
            p for p in (f"{_ID_FIELD} in {_literal(wanted)}", self._expression(filters, exclude)) if p
        )
        found = {
            row[_ID_FIELD]
            for row in self.client.query(
                self.collection, filter=expression, output_fields=[_ID_FIELD], consistency_level=self._consistency()
            )
        }
        return np.array([p for p, i in enumerate(wanted) if i in found], dtype=np.int64)

    def hold_alias(self, alias: str) -> None:
        """Point ``alias`` at this collection, moving it off the one it named (one step on the server)."""
        held = self.client.list_aliases().get("aliases", [])
        (self.client.alter_alias if alias in held else self.client.create_alias)(self.collection, alias)

    def save(self, folder: Path) -> None:
        """Flush the collection and write ``milvus.json``, which ``load`` reopens it from."""
        self.client.flush(self.collection)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "milvus.json").write_text(
            json.dumps(
                {
                    "uri": self.uri,
                    "collection": self.collection,
                    "dim": self.dim,
                    "filterable": self._filterable,
                    "index": self.cfg.model_dump(),
                },
                indent=2,
            )
        )

    @classmethod
    def load(cls, folder: Path, token: str = "") -> MilvusIndex:
        meta = json.loads((folder / "milvus.json").read_text())
        return cls(
            meta["uri"], meta["collection"], meta["dim"], meta["filterable"], IndexConfig(**meta["index"]), token
        )
