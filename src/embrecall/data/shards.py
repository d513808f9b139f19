"""A log larger than memory: streamed once into Parquet shards partitioned by user, split shard by shard.

A user's events all land in one shard (by a fixed hash of the user id), so every per-user step of
the protocol (leave-last-out, the time split's first target, histories) runs on one shard at a
time and never crosses shards.  Two passes, each bounded by settings rather than by the log:

1. *partition*: pyarrow reads ``data.shards.read_rows`` rows at a time, checks ids and timestamps
   (errors name the file line) and appends each row to its user's shard;
2. *split*: each shard is read alone, sorted and split by ``split_dataset`` (shards in parallel
   processes when the log is large; under torchrun each rank splits its own shards); it is written
   back as the train + validation events (with ``in_train``) and its targets.  DuckDB then sums the
   catalog's counts, the users and the daily volumes over every shard file.

Everything is kept under a folder named after the log file (path, size, modification time) and
the settings, so later runs and every rank of a torchrun reuse it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from embrecall.config import Config, DataConfig, SplitConfig
from embrecall.data.dataset import Dataset
from embrecall.data.log import by_count
from embrecall.data.reader import open_source
from embrecall.data.split import Split, split_dataset
from embrecall.data.table import check_ids, require_columns
from embrecall.data.timestamps import TimeColumn
from embrecall.errors import DataError

__all__ = ["Shards", "ShardLog", "prepare_shards", "shard_folder"]

FORMAT = 1
_DUCKDB_MEMORY = "2GB"  # the summary's bound; above it DuckDB spills to the shard folder
_PARTS = ("train", "train_full")


def shard_folder(cfg: Config) -> Path:
    """Where the shards of ``cfg``'s log live: one folder per log file state and settings."""
    d, s = cfg.data, cfg.data.shards
    assert d.path is not None and s is not None  # DataConfig validation
    stat = Path(d.path).stat()
    key = json.dumps(
        [
            FORMAT,
            str(Path(d.path).resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            d.columns.model_dump(),
            d.timestamp_format,
            d.delimiter,
            d.header,
            s.count,
            cfg.split.model_dump(mode="json"),
        ],
        sort_keys=True,
    )
    return (s.folder or cfg.out / "shards") / hashlib.sha256(key.encode()).hexdigest()[:12]


def _batches(d: DataConfig, rows: int, notes: list[str]) -> Iterator[pd.DataFrame]:
    """The log ``rows`` at a time as checked events (string ids, unix seconds, file ``row``)."""
    path, cols = Path(d.path), d.columns  # type: ignore[arg-type]
    source = open_source(path, notes, delimiter=d.delimiter, header=d.header)
    wanted = [cols.user, cols.item, cols.timestamp]
    require_columns(source.columns, wanted, path, "interaction")
    done, times = 0, TimeColumn(d.timestamp_format, str(path), cols.timestamp)
    for frame in source.batches(wanted, rows):
        line = source.first_line + done
        yield pd.DataFrame(
            {
                "user_id": check_ids(frame, cols.user, path, line),
                "item_id": check_ids(frame, cols.item, path, line),
                "timestamp": times.parse(frame[cols.timestamp], line),
                "row": np.arange(done, done + len(frame), dtype=np.int64),
            }
        )
        done += len(frame)
    if done == 0:
        raise DataError("the file has no data rows", file=str(path))
    times.close()


def _within(values: pd.Series | pd.Index | np.ndarray, pool: pd.Index | pd.Series | np.ndarray) -> np.ndarray:
    """Whether each value is in ``pool`` (distinct ids), by hash lookup: ``isin`` on pandas' Arrow
    strings builds a Python object per pool value, seconds per call at a million ids."""
    return pd.Index(np.asarray(pool, dtype=object)).get_indexer(np.asarray(values, dtype=object)) >= 0


def _shard_of(users: pd.Series, count: int) -> np.ndarray:
    """A user's shard: a fixed hash of the id (the same in every process and on every machine),
    hashed once per distinct user of the batch."""
    codes, distinct = pd.factorize(users)
    return (pd.util.hash_array(np.asarray(distinct, dtype=object)) % np.uint64(count)).astype(np.int64)[codes]


def _partition(d: DataConfig, folder: Path, count: int, notes: list[str]) -> int:
    """Pass 1: every row of the log appended to its user's raw shard; returns the rows read."""
    writers: dict[int, pq.ParquetWriter] = {}
    total = 0
    try:
        for frame in _batches(d, d.shards.read_rows, notes):  # type: ignore[union-attr]
            shard = _shard_of(frame["user_id"], count)
            order = np.argsort(shard, kind="stable")
            bounds = np.r_[0, np.cumsum(np.bincount(shard, minlength=count))]
            table = pa.Table.from_pandas(frame.iloc[order], preserve_index=False)
            for s in np.flatnonzero(np.diff(bounds)).tolist():
                part = table.slice(bounds[s], bounds[s + 1] - bounds[s])
                if s not in writers:
                    writers[s] = pq.ParquetWriter(folder / f"raw-{s:05d}.parquet", part.schema)
                writers[s].write_table(part)
            total += len(frame)
    finally:
        for w in writers.values():
            w.close()
    return total


# Below this many events, starting worker processes costs more than splitting the shards here.
_PARALLEL_FROM = 1_000_000


_EMPTY: dict[str, list] = {"user_id": [], "item_id": [], "timestamp": [], "row": []}
_EMPTY_TYPES = {"user_id": object, "item_id": object, "timestamp": np.int64, "row": np.int64}


def _split_one(folder: Path, split_cfg: SplitConfig, s: int) -> None:
    """Pass 2 of one shard (in a worker process or here): its raw events sorted, split and written
    back as the train + validation events and the targets, and the parts' sizes."""
    raw = folder / f"raw-{s:05d}.parquet"
    events = pd.read_parquet(raw) if raw.is_file() else pd.DataFrame(_EMPTY).astype(_EMPTY_TYPES)
    split = split_dataset(Dataset(events), split_cfg)
    in_train = np.isin(split.train_full["row"].to_numpy(), split.train["row"].to_numpy())
    full = split.train_full.assign(in_train=in_train)
    full.drop(columns="row").to_parquet(folder / f"shard-{s:05d}.parquet", index=False)
    pd.concat([split.valid.assign(part="valid"), split.test.assign(part="test")], ignore_index=True).drop(
        columns="row"
    ).to_parquet(folder / f"targets-{s:05d}.parquet", index=False)
    sizes = {"train": len(split.train), "train_full": len(full), "valid": len(split.valid), "test": len(split.test)}
    (folder / f"sizes-{s:05d}.json").write_text(json.dumps(sizes))
    raw.unlink(missing_ok=True)


def _split_shards(cfg: Config, folder: Path, rank: int, world: int) -> None:
    """Pass 2 of this rank's shards (``rank``, ``rank + world``, ...), in as many processes as
    this rank's share of the machine's cores when the log is large; on failure the temporary
    folder is removed."""
    meta = json.loads((folder / "partition.json").read_text())
    mine = range(rank, meta["count"], world)
    cores = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    large = meta["events"] >= _PARALLEL_FROM and sys.platform == "linux"
    workers = min(len(mine), cores) if large else 1
    split_one = partial(_split_one, folder, cfg.split)
    try:
        if workers > 1:
            # Forked: a spawned worker would re-run the caller's script (a user's, without a main
            # guard). The workers run pandas and pyarrow only, never the torch the caller may hold.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                list(pool.map(split_one, mine))
        else:
            for shard in mine:
                split_one(shard)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _summary(folder: Path, count: int) -> dict:
    """The catalog, the users, the last timestamp and the daily volumes of every shard's train +
    validation events: aggregated by DuckDB over the shard files (multi-threaded, in bounded memory)
    and written beside them."""
    files = [str(folder / f"shard-{s:05d}.parquet") for s in range(count)]
    with duckdb.connect(config={"memory_limit": _DUCKDB_MEMORY, "temp_directory": str(folder / ".duckdb")}) as db:
        db.read_parquet(files, union_by_name=True).create_view("events")  # an empty shard's ids have no type
        # train's items first, then those only validation adds; each the most first, ties by id
        # (byte order: Python's order of str), as ``by_count`` orders an in-memory log's catalog
        db.execute(
            "CREATE TABLE catalog AS SELECT * FROM (SELECT item_id, count(*) FILTER (WHERE in_train) AS train, "
            "count(*) AS train_full FROM events GROUP BY item_id) "
            "ORDER BY train = 0, CASE WHEN train > 0 THEN train ELSE train_full END DESC, item_id"
        )
        db.execute("COPY catalog TO $path (FORMAT parquet)", {"path": str(folder / "catalog.parquet")})
        db.execute(
            "COPY (SELECT user_id, bool_or(in_train) AS in_train FROM events GROUP BY user_id ORDER BY user_id) "
            "TO $path (FORMAT parquet)",
            {"path": str(folder / "users.parquet")},
        )
        (trained,) = db.execute("SELECT count(*) FROM catalog WHERE train > 0").fetchone()  # type: ignore[misc]
        until, days, per_day = db.execute(
            "SELECT coalesce(max(last), 0), count(day), "
            "[coalesce(avg(events), 0), coalesce(avg(users), 0), coalesce(avg(items), 0)] FROM ("
            "SELECT floor(timestamp / 86400.0) AS day, max(timestamp) AS last, count(*) AS events, "
            "count(DISTINCT user_id) AS users, count(DISTINCT item_id) AS items FROM events GROUP BY day)"
        ).fetchone()  # type: ignore[misc]
    shutil.rmtree(folder / ".duckdb", ignore_errors=True)  # where it spilled, if it did
    return {
        "n_train_items": int(trained),
        "until": int(until),
        "profile": dict(zip(("days", "events_per_day", "users_per_day", "items_per_day"), (float(days), *per_day))),
    }


@dataclass
class Shards:
    """The shards of one log: per-shard events sorted by user then time, the catalog (train's
    items first, by count, then those only validation adds) and its counts per part."""

    folder: Path
    meta: dict
    _catalog: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def open(cls, folder: Path) -> Shards:
        meta = json.loads((folder / "shards.json").read_text())
        if meta.get("format") != FORMAT:
            raise DataError(
                f"shards written with format {meta.get('format')}, this embrecall reads format {FORMAT}; "
                "delete the folder to write them again",
                file=str(folder),
            )
        return cls(folder, meta)

    @property
    def count(self) -> int:
        return len(self.meta["sizes"])

    @property
    def notes(self) -> list[str]:
        """What reading the log left out or assumed (a last line cut short)."""
        return list(self.meta.get("notes", []))

    @property
    def events(self) -> int:
        return int(self.meta["events"])

    def log(self, part: str) -> ShardLog:
        """The training log of one part: ``train`` (choosing epochs) or ``train_full`` (the final fit)."""
        return ShardLog(self, part)

    def catalog(self) -> pd.DataFrame:
        """Item ids in catalog order and their counts per part, read once (a fit asks several times)."""
        if self._catalog is None:
            self._catalog = pd.read_parquet(self.folder / "catalog.parquet")
        return self._catalog

    def read(self, shard: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.folder / f"shard-{shard:05d}.parquet", columns=columns)

    def sample_split(self, users: int, seed: int) -> Split:
        """The split of ``users`` users drawn at random from the shards that hold targets (all
        their events, so histories are whole), with the whole catalog's counts for evaluation."""
        rng = np.random.default_rng(seed)
        targets = [self.folder / f"targets-{s:05d}.parquet" for s in range(self.count)]
        pool = pd.concat(
            [pd.read_parquet(t, columns=["user_id"]).drop_duplicates() for t in targets], ignore_index=True
        )["user_id"]
        chosen = pool.iloc[rng.choice(len(pool), min(users, len(pool)), replace=False)]
        frames, wanted = [], []
        for s, path in enumerate(targets):
            t = pd.read_parquet(path)
            if _within(t["user_id"], chosen).any():
                ev = self.read(s)
                frames.append(ev[_within(ev["user_id"], chosen)])
                wanted.append(t[_within(t["user_id"], chosen)])
        events = pd.concat(frames, ignore_index=True)
        aims = pd.concat(wanted, ignore_index=True)
        catalog = self.catalog().set_index("item_id")
        counts = {p: catalog[p][catalog[p] > 0].sort_values(ascending=False, kind="stable") for p in _PARTS}
        cols = ["user_id", "item_id", "timestamp"]
        return Split(
            train=events[events["in_train"]][cols].reset_index(drop=True),
            valid=aims[aims["part"] == "valid"][cols].reset_index(drop=True),
            train_full=events[cols].reset_index(drop=True),
            test=aims[aims["part"] == "test"][cols].reset_index(drop=True),
            item_counts=counts,
        )

    def summary(self) -> str:
        m = self.meta
        return (
            f"{m['events']:,} events in {self.count} shards: train {sum(s['train'] for s in m['sizes']):,} "
            f"events, validation {m['targets']['valid']:,} users, train+validation "
            f"{sum(s['train_full'] for s in m['sizes']):,} events, test {m['targets']['test']:,} users"
        )


@dataclass
class ShardLog:
    """One part of a sharded log as training reads it: shard by shard, each rank its own shards."""

    shards: Shards
    part: str

    def items(self) -> tuple[pd.Index, np.ndarray]:
        """The catalog of this part (item ids in catalog order) and each item's training events."""
        table = self.shards.catalog()
        n = self.shards.meta["n_train_items"] if self.part == "train" else len(table)
        return pd.Index(table["item_id"].iloc[:n], dtype=object), table[self.part].to_numpy(np.float64)[:n]

    def item_counts(self) -> pd.Series:
        """Training events per item of this part, the most first."""
        ids, counts = self.items()
        return by_count(pd.Series(counts, index=ids)[counts > 0])

    def user_ids(self) -> pd.Index:
        users = pd.read_parquet(self.shards.folder / "users.parquet")
        return pd.Index(users["user_id"][users["in_train"]] if self.part == "train" else users["user_id"], dtype=object)

    def rows(self, shard: int) -> int:
        return int(self.shards.meta["sizes"][shard][self.part])

    @property
    def part_count(self) -> int:
        return self.shards.count

    def parts(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        return (self.read(shard, columns) for shard in range(self.shards.count))

    def whole(self) -> None:
        return None  # never whole in memory

    def summary(self) -> dict[str, Any]:
        meta = self.shards.meta  # a bundle's history is train + validation: the figures shards.json keeps
        return {"events": len(self), "until": meta["until"], "profile": meta["profile"]}

    def read(self, shard: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """This part's events of one shard, sorted by user then time."""
        events = self.shards.read(shard, None if columns is None else [*columns, "in_train"])
        if self.part == "train":
            events = events[events["in_train"].to_numpy()]
        return events.drop(columns="in_train").reset_index(drop=True)

    def __len__(self) -> int:
        return sum(self.rows(s) for s in range(self.shards.count))


def _partition_shards(cfg: Config) -> Path | None:
    """Pass 1 into a new temporary folder beside the shards' own, or None where an earlier run
    left the shards complete."""
    folder = shard_folder(cfg)
    if (folder / "shards.json").is_file():
        return None
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        count = cfg.data.shards.count  # type: ignore[union-attr]
        started = time.perf_counter()
        notes: list[str] = []
        events = _partition(cfg.data, tmp, count, notes)
        meta = {"count": count, "events": events, "notes": notes, "seconds": time.perf_counter() - started}
        (tmp / "partition.json").write_text(json.dumps(meta))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _finish_shards(cfg: Config, tmp: Path, split_seconds: float) -> None:
    """The split shards' sizes and summary into ``shards.json``, and ``tmp`` moved into place."""
    folder = shard_folder(cfg)
    try:
        part = json.loads((tmp / "partition.json").read_text())
        sizes = [json.loads((tmp / f"sizes-{s:05d}.json").read_text()) for s in range(part["count"])]
        meta = {
            "format": FORMAT,
            "source": str(cfg.data.path),
            "events": part["events"],
            "notes": part["notes"],
            "sizes": [{p: size[p] for p in _PARTS} for size in sizes],
            "targets": {p: sum(size[p] for size in sizes) for p in ("valid", "test")},
            **_summary(tmp, part["count"]),
        }
        meta["seconds"] = {"partition": part["seconds"], "split": split_seconds}
        (tmp / "shards.json").write_text(json.dumps(meta))
        if folder.exists():  # another process finished first: keep its shards
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prepare_shards(
    cfg: Config,
    rank: int = 0,
    world: int = 1,
    agree: Callable[[Path | None], Path | None] = lambda tmp: tmp,
    barrier: Callable[[], None] = lambda: None,
) -> Shards:
    """The shards of ``cfg``'s log, written now unless an earlier run left them complete: rank 0
    reads the log into them, every rank splits its own (``rank``, ``rank + world``, ...), rank 0
    sums them up; one process does all three.  ``agree`` hands rank 0's value to every rank and
    ``barrier`` waits for all (``training.distributed``'s, under torchrun)."""
    tmp = agree(_partition_shards(cfg) if rank == 0 else None)  # None: an earlier run wrote them
    if tmp is not None:
        started = time.perf_counter()
        _split_shards(cfg, tmp, rank, world)
        barrier()
        if rank == 0:
            _finish_shards(cfg, tmp, time.perf_counter() - started)
    barrier()
    return Shards.open(shard_folder(cfg))
