"""`embrecall init`: the config it writes from a log runs as it is, and says what it inferred."""

from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from embrecall import evaluate, load_config
from embrecall.cli import app
from embrecall.data.load import load_dataset
from embrecall.data.split import split_dataset
from embrecall.features import Encoders


def _log(rows: int = 4000, seed: int = 0) -> pd.DataFrame:
    """A shop log: item attributes on every row, a user attribute, a rating and a row id."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 150, rows), rng.zipf(1.5, rows) % 300
    return pd.DataFrame(
        {
            "row": np.arange(rows),
            "customer_id": [f"c{u:04d}" for u in users],
            "product": [f"p{i}" for i in items],
            "bought_at": pd.to_datetime(1_700_000_000 + np.sort(rng.integers(0, 10**7, rows)), unit="s").strftime(
                "%Y-%m-%dT%H:%M:%S"
            ),
            "category": [f"cat{i % 12}" for i in items],
            "price": [round(1.5 + (i % 37) * 2.25, 2) for i in items],
            "region": [f"r{u % 5}" for u in users],
            "stars": rng.integers(1, 6, rows),
        }
    )


def test_init_on_a_csv_writes_a_config_that_trains(tmp_path):
    _log().to_csv(tmp_path / "shop.csv", index=False)
    result = CliRunner().invoke(app, ["init", str(tmp_path / "shop.csv"), "--out", str(tmp_path / "shop.toml")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "user: column 'customer_id' (its name)" in out and "item: column 'product' (its name)" in out
    assert "time: column 'bought_at', read as iso8601" in out
    assert "item 'category': categorical" in out and "item 'price': numeric" in out and "user 'region'" in out
    assert "'row': a different value on almost every row" in out and "'stars': a rating" in out
    cfg = load_config(tmp_path / "shop.toml", ["train.epochs=1", f"out={tmp_path / 'runs'}"])
    rows = evaluate(cfg, ["two_tower", "popular"], show_progress=False)
    assert rows["two_tower"]["HR@100"] > 0 and rows["two_tower"]["targets"] == 150


def test_init_on_a_headerless_log_finds_columns_by_content(tmp_path):
    log = _log()
    log.insert(3, "event", np.where(np.arange(len(log)) % 5 == 0, "buy", "pv"))
    log["bought_at"] = (pd.to_datetime(log["bought_at"]) - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    log[["customer_id", "product", "category", "event", "bought_at"]].to_csv(
        tmp_path / "log.csv", index=False, header=False
    )
    result = CliRunner().invoke(app, ["init", str(tmp_path / "log.csv"), "--out", str(tmp_path / "log.toml")])
    assert result.exit_code == 0, result.output
    assert "time: column '4', read as unix_s (its values)" in result.output
    assert "event type: column '3' (2 types" in result.output
    cfg = load_config(tmp_path / "log.toml")
    data = load_dataset(cfg)
    Encoders(cfg.features).fit(split_dataset(data, cfg.split).train, data.users, data.items)  # every column there
    assert set(data.events["event"]) == {"buy", "pv"}
    again = CliRunner().invoke(app, ["init", str(tmp_path / "log.csv"), "--out", str(tmp_path / "log.toml")])
    assert again.exit_code == 2 and "exists; pass --force" in again.output


def test_init_on_movielens_uses_its_own_reader(ml100k, tmp_path):
    result = CliRunner().invoke(app, ["init", str(ml100k), "--out", str(tmp_path / "ml.toml")])
    assert result.exit_code == 0, result.output
    assert "a MovieLens release" in result.output and "user 'zip': 795 values, hashed" in result.output
    cfg = load_config(tmp_path / "ml.toml")
    data = load_dataset(cfg)
    Encoders(cfg.features).fit(split_dataset(data, cfg.split).train, data.users, data.items)
    assert {f.name for f in cfg.features.item} == {"item_id", "genres", "year"}


def test_init_finds_feature_tables_beside_a_parquet_log(tmp_path):
    """The synthetic generator's layout: events.parquet with users.parquet and items.parquet beside it."""
    from embrecall.config import SyntheticConfig
    from embrecall.data.synthetic import write_parquet

    paths = write_parquet(SyntheticConfig(users=300, items=200, events=6000), tmp_path / "gen")
    result = CliRunner().invoke(app, ["init", str(paths["events"]), "--out", str(tmp_path / "gen.toml")])
    assert result.exit_code == 0, result.output
    assert "item attributes: items.parquet, one row per item (key 'item_id')" in result.output
    assert "item 'title' in items.parquet: a text feature" in result.output
    cfg = load_config(tmp_path / "gen.toml", ["train.epochs=1", f"out={tmp_path / 'runs'}"])
    assert {"category", "price"} <= {f.name for f in cfg.features.item}
    assert evaluate(cfg, ["two_tower"], show_progress=False)["two_tower"]["HR@100"] > 0


def test_init_takes_the_tags_of_the_latest_movielens_releases(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{m},4.0,{964982703 + 60 * (u * 7 + m)}\n" for u in range(1, 40) for m in range(1, 12))
    )
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n"
        + "".join(f"{m},M{m} ({1990 + m}),{'Comedy|Drama' if m % 2 else 'Action'}\n" for m in range(1, 12))
    )
    (tmp_path / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n" + "".join(f"1,{m},t{m % 3},1\n2,{m},t{m % 4},2\n" for m in range(1, 12))
    )
    result = CliRunner().invoke(app, ["init", str(tmp_path), "--out", str(tmp_path / "ml.toml")])
    assert result.exit_code == 0, result.output
    assert "item 'tags': several values per item" in result.output
    cfg = load_config(tmp_path / "ml.toml")
    data = load_dataset(cfg)
    Encoders(cfg.features).fit(split_dataset(data, cfg.split).train, data.users, data.items)


def _purchases(rows: int = 6000, seed: int = 1) -> pd.DataFrame:
    """A grocery purchase log: a product's subclass written before its 13-digit product code, each
    basket's lines sharing one date, quantities and prices per line."""
    rng = np.random.default_rng(seed)
    baskets = rng.integers(0, 900, rows)
    products = rng.zipf(1.4, rows) % 700
    return pd.DataFrame(
        {
            "TRANSACTION_DT": pd.to_datetime(1_000_000_000 + baskets * 86_400 // 9, unit="s").strftime("%m/%d/%Y"),
            "CUSTOMER_ID": [f"{(b % 240):08d}" for b in baskets],
            "AGE_GROUP": [f"{25 + 5 * (b % 240 % 6)}-{29 + 5 * (b % 240 % 6)}" for b in baskets],
            "PRODUCT_SUBCLASS": [100_000 + p % 40 for p in products],
            "PRODUCT_ID": [4_710_000_000_000 + 7919 * p for p in products],
            "AMOUNT": rng.integers(1, 4, rows),
            "SALES_PRICE": rng.integers(20, 900, rows),
        }
    )


def test_init_on_a_purchase_log_takes_the_product_code_for_the_item(tmp_path):
    _purchases().to_csv(tmp_path / "baskets.csv", index=False)
    result = CliRunner().invoke(app, ["init", str(tmp_path / "baskets.csv"), "--out", str(tmp_path / "b.toml")])
    assert result.exit_code == 0, result.output
    assert "item: column 'PRODUCT_ID'" in result.output and "not ['PRODUCT_SUBCLASS']" in result.output
    assert "user: column 'CUSTOMER_ID'" in result.output and "item 'PRODUCT_SUBCLASS': categorical" in result.output
    assert "'PRODUCT_ID': a rating" not in result.output and "'SALES_PRICE': a number per event" in result.output
    cfg = load_config(tmp_path / "b.toml")
    assert cfg.data.columns.item == "PRODUCT_ID"


def test_init_asks_when_two_columns_compete_for_the_item(tmp_path):
    log = _purchases()
    log["SKU"] = [f"s{(p * 31) % 997}" for p in log["PRODUCT_ID"]]  # another id, one per product
    log["PRODUCT_ID"] = log["PRODUCT_ID"].sample(frac=1.0, random_state=0).to_numpy()  # unrelated to SKU now
    log.to_csv(tmp_path / "baskets.csv", index=False)
    asked = CliRunner().invoke(app, ["init", str(tmp_path / "baskets.csv"), "--out", str(tmp_path / "b.toml")])
    assert asked.exit_code == 2 and "could each hold the item; pass --item COLUMN" in asked.output
    told = CliRunner().invoke(
        app, ["init", str(tmp_path / "baskets.csv"), "--item", "SKU", "--out", str(tmp_path / "b.toml")]
    )
    assert told.exit_code == 0 and "item: column 'SKU' (given)" in told.output
