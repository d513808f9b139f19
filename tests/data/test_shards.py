"""A log read out of core into user shards: the same split as in memory, errors with their line,
each rank its own shards, and `embrecall train` on shards writing a bundle that serves."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from embrecall import Bundle, recommend
from embrecall.config import load_config
from embrecall.data import shards as shards_module
from embrecall.data.load import load_dataset, numeric_columns
from embrecall.data.log import MemoryLog, by_count, data_profile
from embrecall.data.shards import prepare_shards, shard_folder
from embrecall.data.split import split_dataset
from embrecall.data.table import read_feature_tables
from embrecall.errors import ConfigError, DataError
from embrecall.features import Encoders
from embrecall.models.channel import UserQuery
from embrecall.models.item2vec import Item2Vec
from embrecall.pipeline import evaluate, fit_channel, train
from embrecall.training.distributed import Ranks
from embrecall.training.sources import FromParts
from tests.conftest import sharded_config

KEY = ["user_id", "item_id", "timestamp"]


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[KEY].astype({"user_id": object, "item_id": object}).sort_values(KEY).reset_index(drop=True)


@pytest.mark.parametrize(
    "split",
    [[], ["split.kind=time", "split.valid_start='1702000000'", "split.test_start='1702500000'"]],
    ids=["leave_last_out", "time"],
)
def test_shards_hold_the_split_the_log_in_memory_gives(tmp_path, split):
    cfg = sharded_config(tmp_path, *split)
    shards = prepare_shards(cfg)
    memory = split_dataset(
        load_dataset(cfg.model_copy(update={"data": cfg.data.model_copy(update={"shards": None})})), cfg.split
    )
    parts = [shards.read(s) for s in range(shards.count)]
    users = [set(p["user_id"]) for p in parts]
    assert sum(map(len, users)) == len(set().union(*users))  # a user's events all in one shard
    everything = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(_rows(everything), _rows(memory.train_full))
    pd.testing.assert_frame_equal(_rows(everything[everything["in_train"]]), _rows(memory.train))
    targets = pd.concat([pd.read_parquet(shards.folder / f"targets-{s:05d}.parquet") for s in range(shards.count)])
    for part, expected in (("valid", memory.valid), ("test", memory.test)):
        pd.testing.assert_frame_equal(_rows(targets[targets["part"] == part]), _rows(expected))
    catalog = shards.catalog().set_index("item_id")
    counts = memory.train_full["item_id"].value_counts()
    assert (catalog["train_full"].reindex(counts.index) == counts).all()
    assert shards.meta["events"] == 6000 and shards.meta["until"] == int(memory.train_full["timestamp"].max())
    assert prepare_shards(cfg).folder == shards.folder  # written once, then reused


def test_the_summary_over_shards_is_the_one_the_log_in_memory_gives(tmp_path):
    cfg = sharded_config(tmp_path)
    shards = prepare_shards(cfg)
    memory = split_dataset(
        load_dataset(cfg.model_copy(update={"data": cfg.data.model_copy(update={"shards": None})})), cfg.split
    )
    catalog = shards.catalog()
    train = MemoryLog(memory.train).item_counts()
    only_full = by_count(memory.train_full["item_id"].value_counts().drop(train.index, errors="ignore"))
    assert list(catalog["item_id"]) == [*train.index, *only_full.index]  # the most first, ties by id
    assert shards.meta["n_train_items"] == len(train)
    assert shards.meta["profile"] == pytest.approx(data_profile(memory.train_full))
    users = pd.read_parquet(shards.folder / "users.parquet")
    assert set(users["user_id"]) == set(memory.train_full["user_id"])
    assert set(users["user_id"][users["in_train"]]) == set(memory.train["user_id"])


def test_shards_split_in_worker_processes_are_those_split_in_one(tmp_path, monkeypatch):
    one = prepare_shards(sharded_config(tmp_path / "one", count=4))
    monkeypatch.setattr(shards_module, "_PARALLEL_FROM", 0)  # a tiny log split as a large one is
    several = prepare_shards(sharded_config(tmp_path / "several", count=4))
    assert {k: v for k, v in one.meta.items() if k not in ("seconds", "source")} == {
        k: v for k, v in several.meta.items() if k not in ("seconds", "source")
    }
    for name in sorted(p.name for p in one.folder.glob("*.parquet")):
        pd.testing.assert_frame_equal(pd.read_parquet(one.folder / name), pd.read_parquet(several.folder / name))


def test_a_bad_row_is_named_with_its_line_in_the_file(tmp_path, write):
    rows = [f"u{i % 50},i{i % 70},{1_700_000_000 + i}" for i in range(2_500)]
    rows[1_700] = "u3,,1700001700"  # file line 1,702 (the header is line 1), in the second piece read
    path = write("log.csv", "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    cfg = load_config(
        None, ["data.format=table", f"data.path={path}", "data.shards.read_rows=1000", f"out={tmp_path / 'runs'}"]
    )
    with pytest.raises(DataError, match=r"row 1702, column 'item_id': empty id"):
        prepare_shards(cfg)
    assert not (tmp_path / "runs" / "shards").exists() or not any((tmp_path / "runs" / "shards").iterdir())
    with pytest.raises(DataError, match="missing interaction column"):
        prepare_shards(
            cfg.model_copy(
                update={
                    "data": cfg.data.model_copy(update={"columns": cfg.data.columns.model_copy(update={"user": "uid"})})
                }
            )
        )


def test_the_span_of_times_is_judged_on_the_whole_column_not_on_one_piece(tmp_path, write):
    day, start = 86_400, 1_700_000_000
    times = [start + (400 * day if i % 100 == 0 else i) for i in range(1_000)]  # piece 1: one day and a few later
    times += [start + (380 + i % 40) * day for i in range(1_500)]  # pieces 2 and 3: forty days, a year on
    rows = [f"u{i % 50},i{i % 70},{t}" for i, t in enumerate(times)]
    path = write("log.csv", "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    base = ["data.format=table", f"data.path={path}", "data.shards.read_rows=1000", f"out={tmp_path / 'runs'}"]
    assert prepare_shards(load_config(None, base)).events == 2_500  # no piece's span is the column's
    rows[2_200] = "u3,i4,157766400"  # 1975, in the third piece read: file line 2,202
    path.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"row 2202.*'157766400' \(1975-01-01\) is far outside the span"):
        prepare_shards(load_config(None, base))


def test_each_rank_reads_its_own_shards_in_steps_of_exactly_one_batch(tmp_path):
    cfg = sharded_config(tmp_path, count=5)
    log = prepare_shards(cfg).log("train")
    counts = log.item_counts()
    users, items = read_feature_tables(cfg.data, numeric_columns(cfg), [])
    enc = Encoders(cfg.features).fit_ids(counts.index, log.user_ids(), pd.DataFrame(), users, items)
    seen = []
    for rank in range(2):
        source = FromParts(log, enc, users, items, counts, Ranks(rank, 2))
        steps, walk = source.epoch(np.random.default_rng(0), 64, Ranks(rank, 2))
        mine = set().union(*(set(log.read(s)["user_id"]) for s in source.mine))
        batches = list(walk)
        assert len(batches) == steps == sum(log.rows(s) // 64 for s in source.mine)  # no process group: its own count
        assert all(len(rows) == 64 for _, rows in batches)
        assert {id(ex) for ex, _ in batches} and all(
            len(ex) <= max(log.rows(s) for s in source.mine) for ex, _ in batches
        )  # one shard's examples at a time
        seen.append(mine)
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == len(log.user_ids())


def test_sequence_windows_from_shards_are_the_windows_of_the_whole_log(tmp_path):
    """A shard holds whole users, so its windows are the in-memory log's: an epoch over the shards
    walks each window once (but a shard's last partial step), each window's targets in order."""
    from embrecall.training.examples import Examples
    from embrecall.training.sources import InMemory

    sequence = "features.user=[{kind: categorical, name: user_id}, {kind: sequence, name: recent, max_len: 5}]"
    cfg = sharded_config(tmp_path, sequence, count=4)
    log = prepare_shards(cfg).log("train")
    counts = log.item_counts()
    users, items = read_feature_tables(cfg.data, numeric_columns(cfg), [])
    enc = Encoders(cfg.features).fit_ids(counts.index, log.user_ids(), pd.DataFrame(), users, items)
    whole = Examples(pd.concat(log.parts()), enc, users, items)
    per_shard = [Examples(log.read(s), enc, users, items) for s in range(log.part_count)]
    assert sum(len(ex.units(True)[0]) for ex in per_shard) == len(whole.units(True)[0])
    whole_steps, _ = InMemory(whole, windowed=True).epoch(np.random.default_rng(0), 64, Ranks())
    steps, walk = FromParts(log, enc, users, items, counts, Ranks(), windowed=True).epoch(
        np.random.default_rng(0), 64, Ranks()
    )
    per_step = round(64 * len(whole.units(True)[0]) / len(whole))  # windows holding about 64 targets
    walked: Counter = Counter()
    shards = []
    for ex, starts in walk:
        assert len(starts) == per_step
        _, _, rows = ex.window_batch(starts)
        shards.append(ex)
        walked.update((id(ex), int(r)) for r in rows)
    assert steps == len(shards) and abs(steps - whole_steps) <= log.part_count  # a shard's partial step is left
    assert max(walked.values()) == 1  # each target once an epoch
    assert len(whole) - 2 * 64 * log.part_count < len(walked) <= len(whole)


def test_training_on_shards_writes_a_bundle_that_serves(tmp_path):
    cfg = sharded_config(tmp_path, "channels.serve.two_tower=0.7", "channels.serve.item2vec=0.3")
    report = train(cfg, show_progress=False)
    manifest = json.loads((report.bundle / "manifest.json").read_text())
    shards = prepare_shards(cfg)
    assert manifest["data"]["events"] == sum(s["train_full"] for s in shards.meta["sizes"])
    assert manifest["data"]["profile"]["events_per_day"] > 0
    m = report.metrics
    assert m["two_tower"]["HR@50"] > m["popular"]["HR@50"]
    bundle = Bundle.load(report.bundle)
    assert len(bundle.users) == len(prepare_shards(cfg).log("train_full").user_ids())
    served = recommend(report.bundle, bundle.users.index[0], k=10)
    assert len(served) == 10 and set(served["channel"]) <= {"two_tower", "item2vec", "popular"}


def test_item2vec_on_shards_learns_the_items_it_learns_in_memory(tmp_path):
    cfg = sharded_config(tmp_path)
    log = prepare_shards(cfg).log("train_full")
    events = pd.concat([log.read(s) for s in range(log.shards.count)], ignore_index=True)
    streamed = Item2Vec(cfg.channels.item2vec).fit(log).item_vectors()[0]
    whole = Item2Vec(cfg.channels.item2vec).fit(MemoryLog(events)).item_vectors()[0]
    assert set(streamed) == set(whole)  # the same sessions, so the same vocabulary


def test_what_a_sharded_log_cannot_do_is_refused_before_reading(tmp_path):
    base = ["data.format=table", f"data.path={tmp_path / 'log.csv'}", "data.shards.count=4"]
    with pytest.raises(ConfigError, match="data.context_columns need more of it"):
        load_config(None, [*base, "data.context_columns=[scene]"])
    with pytest.raises(ConfigError, match="embrecall train` reports the test metrics"):
        evaluate(sharded_config(tmp_path), ["popular"], show_progress=False)
    assert shard_folder(sharded_config(tmp_path)) != shard_folder(sharded_config(tmp_path, "data.shards.count=4"))


@pytest.mark.parametrize("name", ["popular", "itemcf", "swing", "ease"])
def test_channels_fitted_from_shards_equal_the_same_channel_fitted_in_memory(tmp_path, name):
    cfg = sharded_config(tmp_path, count=4)
    log = prepare_shards(cfg).log("train_full")
    events = pd.concat(list(log.parts()), ignore_index=True)
    sharded = fit_channel(name, cfg, log, None, show_progress=False)
    whole = fit_channel(name, cfg, MemoryLog(events), None, show_progress=False)
    queries = [UserQuery(str(u), tuple(h)) for u, h in events.groupby("user_id")["item_id"].agg(tuple).head(50).items()]
    for a, b in zip(sharded.recommend(queries, 20), whole.recommend(queries, 20)):
        # the same scores; items may trade places only where float sums taken in another user
        # order tie them (shards hold users in hash order, memory in id order)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
        ours, theirs = dict(zip(a.item_ids, a.scores)), dict(zip(b.item_ids, b.scores))
        for item in set(ours) & set(theirs):
            assert np.isclose(ours[item], theirs[item], rtol=1e-5)
        for item in set(ours) ^ set(theirs):
            assert np.isclose({**ours, **theirs}[item], a.scores[-1], rtol=1e-5)
