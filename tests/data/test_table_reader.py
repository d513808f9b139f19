"""The generic reader: formats real exports use, and a clear message for every kind of bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from embrecall.config import load_config
from embrecall.data.load import load_dataset
from embrecall.errors import DataError


def _load(path, *sets):
    return load_dataset(load_config(None, ["data.format=table", f"data.path={path}", *sets]))


def test_ids_stay_strings_with_leading_zeros_and_bom_and_quotes(write):
    p = write("log.csv", '\ufeffuser_id,item_id,timestamp\n"007","0042",1700000000\n"7","42","1700000001"\n')
    events = _load(p).events
    assert events["user_id"].tolist() == ["007", "7"]
    assert events["item_id"].tolist() == ["0042", "42"]


@pytest.mark.parametrize(
    "stamps, fmt, expected",
    [
        (["1700000000", "1700000060"], "auto", [1700000000, 1700000060]),  # unix seconds
        (["1700000000123", "1700000060999"], "auto", [1700000000, 1700000060]),  # milliseconds
        (["2023-11-14T22:13:20Z", "2023-11-14T22:14:20+00:00"], "auto", [1700000000, 1700000060]),
        (["11/14/2023", "11/15/2023"], "%m/%d/%Y", [1699920000, 1700006400]),
    ],
)
def test_timestamp_spellings(write, stamps, fmt, expected):
    rows = "".join(f"u{i},i{i},{s}\n" for i, s in enumerate(stamps))
    p = write("log.csv", "user_id,item_id,timestamp\n" + rows)
    assert _load(p, f"data.timestamp_format={fmt}").events["timestamp"].tolist() == expected


def test_column_mapping_and_event_filter_is_reported(write):
    p = write("log.csv", "uid;iid;when;what\na;x;1;click\na;y;2;view\nb;x;3;click\n")
    data = _load(
        p,
        "data.delimiter=;",
        "data.columns.user=uid",
        "data.columns.item=iid",
        "data.columns.timestamp=when",
        "data.columns.event=what",
        "data.events=[click]",
    )
    assert data.events["item_id"].tolist() == ["x", "x"]
    assert any("kept 2 of 3 rows" in n for n in data.notes)


def test_missing_column_names_file_and_available_columns(write):
    p = write("log.csv", "user,item_id,timestamp\nu,i,1\n")
    with pytest.raises(
        DataError,
        match=r"log\.csv.*missing interaction column\(s\) \['user_id'\].*"
        r"the file has \['user', 'item_id', 'timestamp'\]",
    ):
        _load(p)


def test_unparsable_timestamp_names_row_and_value(write):
    p = write("log.csv", "user_id,item_id,timestamp\nu,i,1700000000\nu,j,yesterday\n")
    with pytest.raises(
        DataError,
        match=r"row 3, column 'timestamp': cannot use timestamp 'yesterday'.*"
        r"set data\.timestamp_format",
    ):
        _load(p)


@pytest.mark.parametrize(
    "good, bad, fmt",
    [
        ("1700000000", "1e29", "unix_s"),
        ("1700000000", "-5", "auto"),
        ("1700000000000", "99999999999999", "auto"),  # milliseconds, the second in 5138
        ("2020-01-01", "2500-01-01", "iso8601"),
    ],
)
def test_timestamp_outside_1970_to_2100_names_row(write, good, bad, fmt):
    p = write("log.csv", f"user_id,item_id,timestamp\nu,i,{good}\nu,j,{bad}\n")
    with pytest.raises(DataError, match=r"row 3, column 'timestamp'.*expected a time between 1970 and 2100"):
        _load(p, f"data.timestamp_format={fmt}")


def test_bad_date_for_given_format(write):
    p = write("log.csv", "user_id,item_id,timestamp\nu,i,11/14/2023\nu,j,2023-11-15\n")
    with pytest.raises(DataError, match=r"row 3.*'2023-11-15'; expected the format '%m/%d/%Y'"):
        _load(p, "data.timestamp_format=%m/%d/%Y")


def test_empty_file_and_header_only(write):
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        _load(write("empty.csv", ""))
    with pytest.raises(DataError, match=r"header\.csv: the file has no data rows"):
        _load(write("header.csv", "user_id,item_id,timestamp\n"))


def test_empty_id_names_row(write):
    p = write("log.csv", "user_id,item_id,timestamp\nu,i,1\n,j,2\n")
    with pytest.raises(DataError, match=r"row 3, column 'user_id': empty id"):
        _load(p)


def test_duplicate_feature_rows_name_both_lines(write, tmp_path):
    log = write("log.csv", "user_id,item_id,timestamp\nu,i,1\n")
    items = write("items.csv", "id,genre\ni,a\nj,b\ni,c\n")
    with pytest.raises(
        DataError,
        match=r"items\.csv, column 'id': id 'i' appears on more than one row "
        r"\(lines 2 and 4\)",
    ):
        _load(log, f"data.items.path={items}", "data.items.key=id")


def test_text_and_nan_in_numeric_feature_column(write):
    log = write("log.csv", "user_id,item_id,timestamp\nu,i,1\n")
    items = write("items.csv", "item_id,price\ni,3.5\nj,cheap\n")
    numeric: list[str] = []  # the default spec's item features include numeric 'price'
    with pytest.raises(DataError, match=r"items\.csv, row 3, column 'price': 'cheap' is not a number"):
        _load(log, f"data.items.path={items}", "data.items.key=item_id", *numeric)
    items = write("items2.csv", "item_id,price\ni,\nj,2\n")
    with pytest.raises(DataError, match=r"items2\.csv, row 2, column 'price': '' is not a number"):
        _load(log, f"data.items.path={items}", "data.items.key=item_id", *numeric)


def test_ids_absent_from_feature_table_are_counted(write):
    log = write("log.csv", "user_id,item_id,timestamp\nu,i,1\nu,k,2\nv,k,3\n")
    items = write("items.csv", "item_id,price\ni,3\n")
    data = _load(log, f"data.items.path={items}", "data.items.key=item_id")
    assert any("2 interactions (1 items) have no row in the item feature table" in n for n in data.notes)


def test_attributes_carried_on_interaction_rows(write):
    p = write("log.csv", "user_id,item_id,timestamp,category,region\nu,i,1,shoes,north\nv,j,2,hats,south\n")
    data = _load(p, "data.item_columns=[category]", "data.user_columns=[region]")
    assert data.items.loc["j", "category"] == "hats"
    assert data.users.loc["u", "region"] == "north"
    assert "category" not in data.events.columns
    assert not any("more than one value" in n for n in data.notes)


def test_an_item_whose_category_changes_keeps_the_latest_and_says_so(write):
    p = write("log.csv", "user_id,item_id,timestamp,category\nu,i,1,shoes\nv,i,3,boots\nw,i,2,hats\nu,j,2,x\n")
    data = _load(p, "data.item_columns=[category]")
    assert data.items.loc["i", "category"] == "boots"
    assert any(
        "column 'category': 1 items have more than one value in the log (e.g. 'i'); the latest value is used" in n
        for n in data.notes
    )


def test_parquet_input(tmp_path):
    p = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [1, 2], "item_id": ["a", "b"], "timestamp": [1700000000, 1700000001]}).to_parquet(p)
    assert _load(p).events["user_id"].tolist() == ["1", "2"]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        _load(tmp_path / "nope.csv")


def test_a_last_line_cut_short_is_left_out_with_a_note(write):
    """A copy cut at a byte boundary (the shared Taobao sample is one): not an error, not silent."""
    p = write("log.csv", "u,i,c,pv,1511544070\nu,j,c,pv,1511544071\nv,k,c,pv", encoding="utf-8")
    data = _load(p, "data.header=false", "data.columns={user: '0', item: '1', timestamp: '4'}")
    assert data.events["item_id"].tolist() == ["i", "j"]
    assert any("the last line ends without a newline and has fewer fields" in n for n in data.notes)
    whole = write("whole.csv", "user_id,item_id,timestamp\nu,i,1700000000\nu,j,")  # all fields there, one empty
    with pytest.raises(DataError, match="row 3, column 'timestamp'"):
        _load(whole)


def test_a_malformed_line_names_its_line_and_text(write):
    p = write("log.csv", "user_id,item_id,timestamp\nu,i,1700000000\nu,j\nu,k,1700000002\n")
    with pytest.raises(
        DataError, match=r"log\.csv: not a well-formed delimited file: line 3 has 2 fields, the header 3: 'u,j'"
    ):
        _load(p)


def test_text_that_is_not_utf8_is_refused(tmp_path):
    p = tmp_path / "log.csv"
    p.write_bytes(b"user_id,item_id,timestamp\nu,\xff\xfe,1700000000\n")
    with pytest.raises(DataError, match=r"log\.csv: not UTF-8 text; re-encode the file as UTF-8"):
        _load(p)


def test_the_sharded_log_reads_the_same_events_as_the_log_in_memory(write, tmp_path):
    """One reader: quoted ids, a BOM, blank lines and a last line cut short read alike both ways."""
    from embrecall.data.shards import prepare_shards

    rows = "".join(f'"{u:03d}",i{(u * 7 + t) % 13},{1700000000 + t}\n\n' for u in range(9) for t in range(4))
    p = write("log.csv", "\ufeffuser_id,item_id,timestamp\n" + rows + "009,i1")
    whole = _load(p)
    cfg = load_config(
        None,
        ["data.format=table", f"data.path={p}", "data.shards.count=2", f"out={tmp_path}"],
    )
    shards = prepare_shards(cfg)
    sharded = pd.concat([shards.log("train_full").read(s) for s in range(shards.count)], ignore_index=True)
    assert shards.events == len(whole.events) == 36
    assert any("fewer fields" in n for n in shards.notes) and any("fewer fields" in n for n in whole.notes)
    assert set(sharded["user_id"]) == set(whole.events["user_id"]) == {f"{u:03d}" for u in range(9)}


@pytest.mark.parametrize(
    "stamps, said",
    [
        # seconds and milliseconds mixed: read alike, half the rows would land in January 1970
        (["1700000000", "1700000060123", "1700000120", "1700000180"], r"row 3.*mixes unix seconds and milliseconds"),
        # a year-9999 value in seconds among seconds (read as milliseconds it would be 1978)
        (["1700000000", "253402300799", "1700000120", "1700000180"], r"row 3.*mixes unix seconds and milliseconds"),
        # a zero among 2023's events
        (["1700000000", "0", "1700000120", "1700000180"], r"row 3.*'0' \(1970-01-01\) is far outside the span"),
        # every row on one instant
        (["0", "0", "0", "0"], r"every one of the 4 rows has the same time \(1970-01-01T00:00:00\)"),
    ],
)
def test_timestamps_that_cannot_be_a_logs_times_are_refused_with_their_rows(write, stamps, said):
    rows = "".join(f"u{i % 2},i{i},{s}\n" for i, s in enumerate(stamps))
    with pytest.raises(DataError, match=said):
        _load(write("log.csv", "user_id,item_id,timestamp\n" + rows))


def test_a_sharded_log_cannot_mix_units_across_batches(write, tmp_path):
    """Each batch alone is consistent; the second's milliseconds disagree with the first's seconds."""
    from embrecall.data.shards import prepare_shards

    rows = [f"u{i % 50},i{i % 90},{1700000000 + i}" for i in range(1000)]
    rows += [f"u{i % 50},i{i % 90},{(1700000000 + i) * 1000}" for i in range(1000, 1500)]
    p = write("log.csv", "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    cfg = load_config(
        None,
        ["data.format=table", f"data.path={p}", "data.shards.count=2", "data.shards.read_rows=1000", f"out={tmp_path}"],
    )
    with pytest.raises(DataError, match=r"row 1002.*mixes unix seconds and milliseconds"):
        prepare_shards(cfg)
