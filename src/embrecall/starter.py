"""`embrecall init`: look at a log and write a config that runs as it is.

For a file (CSV, TSV or Parquet) the columns are inferred from a sample: which holds users, items,
time (and its format), event types, and which other columns are attributes of an item (one value
per item), of a user, or of neither (ratings, row ids: left out, with the reason).  A MovieLens
folder is read by its own reader.  The features are those a careful engineer declares for such
data: ids, the recent items (last one, recent ones with decay, a longer history for long
histories), every item and user attribute by its kind and cardinality.  Everything inferred is
said, with why, and so is what was left out.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from embrecall.config import EaseConfig
from embrecall.data.movielens import is_movielens_dir, read_movielens
from embrecall.data.reader import is_parquet, open_source
from embrecall.errors import DataError

__all__ = ["Starter", "starter_config"]

SAMPLE_ROWS = 200_000
_NAMES = {
    "user": r"user|uid|customer|member|visitor|buyer|reader|client|household|shopper|account",
    "item": r"item|product|movie|sku|goods|article|book|song|track|video|doc|offer",
    "timestamp": r"time|date|^ts$|timestamp|^day$|created",
    "event": r"event|behav|action|^type$|interaction",
}
_ID_NAME = r"(^|[_\W])(id|sku|code|no|number)$|(?<=[a-z])Id$|^id$"  # an id-like column name


@dataclass
class Starter:
    """A starter config and what was inferred to write it."""

    toml: str
    said: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def _sniff(path: Path) -> tuple[str, bool]:
    """The delimiter and whether the first line is a header, from the file's first 64 KB."""
    with path.open("r", encoding="utf-8-sig", errors="replace") as fh:
        head = fh.read(65536)
    head = head[: head.rfind("\n")] if "\n" in head else head
    try:
        dialect = csv.Sniffer().sniff(head, delimiters=",\t;|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    first = head.split("\n", 1)[0].split(delimiter)
    header = not any(re.fullmatch(r"-?\d+(\.\d+)?", cell.strip()) for cell in first)  # a header holds no numbers
    return delimiter, header


def _sample(path: Path) -> tuple[pd.DataFrame, str, bool]:
    """The log's first rows, every cell a string, skipping lines the reader cannot split."""
    delimiter, header = (",", True) if is_parquet(path) else _sniff(path)
    frame = open_source(path, [], delimiter=delimiter, header=header, bad_lines="skip").head(SAMPLE_ROWS)
    return frame.astype(str), delimiter, header


def _time_format(values: pd.Series) -> str | None:
    """The timestamp_format that reads ``values``, or None if they are not times."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().mean() > 0.99:
        median = float(numbers.median())
        return "unix_s" if 1e8 <= median < 5e9 else "unix_ms" if 1e11 <= median < 5e12 else None
    text = values.astype(str).str.strip()
    if text.str.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}").mean() > 0.99:
        return "%m/%d/%Y"
    if pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).notna().mean() > 0.99:
        return "iso8601"
    return None


def _pick(frame: pd.DataFrame, role: str, taken: set[str]) -> str | None:
    return next((c for c in frame.columns if c not in taken and re.search(_NAMES[role], c, re.I)), None)


def _determines(frame: pd.DataFrame, key: str, column: str) -> bool:
    """Whether ``key`` determines ``column`` and has more values: ``column`` is then an attribute
    of ``key`` (a product's category), not the entity itself."""
    return frame[key].nunique() > frame[column].nunique() and _per(frame, key, column)


def _entity(frame: pd.DataFrame, role: str, taken: set[str], given: str | None, said: list[str]) -> str:
    """The column holding ``role`` (user or item): the one given, else among the columns its name
    suggests, the one no other candidate determines (a category column names the product too, but
    each product has one category); an id-like name (``*_id``, ``sku``, ``code``) breaks a tie, and
    two candidates that still compete are asked for (``--user``/``--item``)."""
    if given is not None:
        if given not in frame.columns:
            raise DataError(f"--{role} names column {given!r}; the log has {list(frame.columns)}")
        said.append(f"{role}: column '{given}' (given)")
        return given
    named = [c for c in frame.columns if c not in taken and re.search(_NAMES[role], c, re.I)]
    if not named:  # headerless or unnamed: the first columns in order, as logs are written
        name = next(c for c in frame.columns if c not in taken)
        said.append(f"{role}: column '{name}' (position: no column name says {role})")
        return name
    kept = [c for c in named if not any(_determines(frame, other, c) for other in named if other != c)]
    if len(kept) > 1:
        kept = [c for c in kept if re.search(_ID_NAME, c, re.I)] or kept
    if len(kept) > 1:
        raise DataError(
            f"columns {kept} could each hold the {role}; pass --{role} COLUMN to say which "
            f"(the others become attributes)"
        )
    dropped = [c for c in named if c != kept[0]]
    why = f"; not {dropped}: attributes of it" if dropped and len(named) > 1 else ""
    said.append(f"{role}: column '{kept[0]}' (its name{why})")
    return kept[0]


def _infer_columns(frame: pd.DataFrame, said: list[str], given: dict[str, str | None] | None = None) -> dict[str, str]:
    """user, item, timestamp (and event) columns: by name where the file has names, else by content;
    ``given`` (role -> column) overrides the inference."""
    given = given or {}
    cols: dict[str, str] = {}
    for role in ("user", "item"):
        cols[role] = _entity(frame, role, set(cols.values()) | {v for v in given.values() if v}, given.get(role), said)
    named = given.get("timestamp") or _pick(frame, "timestamp", set(cols.values()))
    if named is not None and named not in frame.columns:
        raise DataError(f"--time names column {named!r}; the log has {list(frame.columns)}")
    candidates = ([named] if named else []) + [c for c in frame.columns if c not in cols.values() and c != named]
    for c in candidates:
        fmt = _time_format(frame[c])
        if c == given.get("timestamp") and fmt is None:
            raise DataError(f"--time column {c!r} holds no times (unix seconds or milliseconds, or dates)")
        if fmt:
            cols["timestamp"], cols["timestamp_format"] = c, fmt
            said.append(f"time: column '{c}', read as {fmt} ({'its name' if c == named else 'its values'})")
            break
    else:
        raise DataError(
            "no column holds times (unix seconds or milliseconds, or dates); the protocol orders each "
            "user's events by time, so the log needs one"
        )
    event = _pick(frame, "event", set(cols.values()))
    if event and frame[event].nunique() <= 20:
        cols["event"] = event
        said.append(
            f"event type: column '{event}' ({frame[event].nunique()} types: every one counts as a positive; "
            "set data.events to keep some)"
        )
    return cols


def _per_event(values: pd.Series) -> str:
    """What a column that belongs to neither items nor users holds, to say why it is left out."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().mean() <= 0.99:
        return "per event"
    if values.astype(str).str.len().median() >= 8 and bool((numbers.dropna() % 1 == 0).all()):
        return "an id or code (long whole numbers)"
    return "a rating or count" if numbers.nunique() <= 11 else "a number per event (an amount, a price)"


def _per(frame: pd.DataFrame, key: str, column: str) -> bool:
    """Whether ``column`` holds one value per ``key`` (allowing a few changes over time)."""
    return bool((frame.groupby(key, sort=False)[column].nunique() <= 1).mean() >= 0.95)


def _feature(column: str, values: pd.Series, owners: int, said: list[str], side: str) -> str | None:
    """The TOML of one attribute feature, chosen by its values; None when it is no feature."""
    name = column if column.isidentifier() else f"{side}_{column}"
    values = values[values.astype(str).str.len() > 0].astype(str)
    distinct = values.nunique()
    numbers = pd.to_numeric(values, errors="coerce")
    if distinct <= 1:
        return None
    whole = numbers.notna().mean() > 0.99 and bool((numbers.dropna() % 1 == 0).all())
    if numbers.notna().mean() > 0.99 and distinct > 20 and not whole:  # whole numbers are mostly codes (ids, years)
        transform = (
            "log_standardize"
            if numbers.min() >= 0 and numbers.max() > 100 * max(numbers.median(), 1e-9)
            else "standardize"
        )
        said.append(f"{side} '{column}': numeric, {distinct:,} values ({transform})")
        kind = f'kind = "numeric"\ntransform = "{transform}"'
    elif values.str.contains("|", regex=False).mean() > 0.1:
        said.append(f"{side} '{column}': several values per {side} ('|'-separated)")
        kind = 'kind = "multi"\ndim = 16'
    elif distinct > 100 and distinct > owners // 4:  # near one value per owner (zip codes): buckets, not a vocabulary
        said.append(f"{side} '{column}': {distinct:,} values, hashed into 1,000 buckets")
        kind = 'kind = "hashed"\nbuckets = 1000\ndim = 8'
    else:
        dim = int(np.clip(2 ** np.ceil(np.log2(max(distinct, 2)) / 2 + 1), 4, 32))
        said.append(f"{side} '{column}': categorical, {distinct:,} values (dim {dim})")
        kind = f'kind = "categorical"\ndim = {dim}'
    return f'{kind}\nname = "{name}"' + (f'\ncolumn = "{column}"' if name != column else "")


def _side_table(
    log: Path, side: str, key: str, config_dir: Path, said: list[str], left_out: list[str]
) -> tuple[str, pd.DataFrame] | None:
    """A feature table beside the log (``users.parquet``, ``items.csv``...) keyed by the log's
    ``key`` column: its TOML line and its attribute columns (a title is left out: text needs
    the text extra)."""
    for f in sorted(log.parent.iterdir()):
        if (
            f == log
            or f.suffix.lower() not in (".csv", ".tsv", ".parquet", ".pq")
            or not re.search(_NAMES[side], f.stem, re.I)
        ):
            continue
        table, delimiter, header = _sample(f)
        if not header or key not in table.columns or not table[key].is_unique:
            continue
        where = os.path.relpath(f.resolve(), config_dir.resolve())
        said.append(f"{side} attributes: {f.name}, one row per {side} (key '{key}')")
        table = table.set_index(key)
        if "title" in table.columns:
            left_out.append(f"{side} 'title' in {f.name}: a text feature needs pip install 'embrecall[text]'")
            table = table.drop(columns=["title"])
        sep = f', delimiter = "{delimiter}"' if delimiter != "," else ""
        return f'{side}s = {{ path = "{where}", key = "{key}"{sep} }}', table
    return None


def _features(columns: list[str], table: pd.DataFrame | None, said: list[str], side: str) -> list[str]:
    """The feature blocks of a side's columns (its table holds them), each said in ``said``."""
    if table is None:
        return []
    return [f for c in columns if (f := _feature(c, table[c], len(table), said, side)) is not None]


def _history_features(events_per_user: float, said: list[str]) -> list[str]:
    out = [
        'kind = "history"\nname = "last_item"\nmax_len = 1',
        'kind = "history"\nname = "recent"\nmax_len = 20\ndecay = 0.8',
    ]
    if events_per_user >= 50:
        out.append('kind = "history"\nname = "longer"\nmax_len = 50\ndecay = 0.97')
    longer = ", the last 50 with decay 0.97" * (events_per_user >= 50)
    said.append(
        f"histories: the last item, the last 20 with decay 0.8{longer} (median {events_per_user:.0f} events per user)"
    )
    return out


def _item_counts(path: Path, column: str, delimiter: str, header: bool) -> pd.Series:
    """Events per item in the whole log (one column read, in batches): which channels fit the catalog."""
    source = open_source(path, [], delimiter=delimiter, header=header, bad_lines="skip")
    counts = [frame[column].astype(str).value_counts() for frame in source.batches([column])]
    return pd.concat(counts).groupby(level=0).sum() if counts else pd.Series(dtype=np.int64)


EASE_FLOOR = 20  # init leaves EASE out when fitting it would take a floor above this many events per item


def _served(counts: pd.Series, said: list[str]) -> str:
    """The served list: every channel that fits the catalog, fused by rank; EASE over the items
    with enough events that its dense item x item matrix fits ``channels.ease.max_items``.
    ``tune --channel served`` chooses on validation."""
    most = EaseConfig().max_items
    floor = next((f for f in range(1, EASE_FLOOR + 1) if int((counts >= f).sum()) <= most), None)
    ease = "" if floor is None else f"ease (items with at least {floor} events)" if floor > 1 else "ease"
    said.append(
        f"served: two_tower, itemcf{', ' + ease if ease else ''} fused by rank ({len(counts):,} items"
        f"{'' if ease else ': too many for EASE'}); choose on validation with embrecall tune --channel served"
    )
    weights = "two_tower = 1.0, itemcf = 1.0" + ", ease = 1.0" * bool(ease)
    block = f'[channels]\nserve = {{ {weights} }}\nmerge_mode = "rrf"\n'
    return block + (f"\n[channels.ease]\nmin_count = {floor}\n" if floor and floor > 1 else "")


def _toml(data: list[str], user: list[str], item: list[str], said: list[str], served: str) -> str:
    blocks = [
        "# Written by `embrecall init`: what was inferred, and why:",
        *[f"#   {s}" for s in said],
        "# Run:  embrecall evaluate --config <this file>; then embrecall tune --config <this file>",
        "",
        "[data]",
        *data,
        "",
    ]
    blocks += [f"[[features.user]]\n{f}\n" for f in user] + [f"[[features.item]]\n{f}\n" for f in item]
    blocks += [
        "[model]\nitem_embedding_dim = 64\nhidden = [256]\noutput_dim = 64\n",
        '[train]\nloss = "sampled_softmax"\ntemperature = 0.05\nbatch_size = 512\nepochs = 30\npatience = 3\n'
        "lr = 0.002\n",
        served,
    ]
    return "\n".join(blocks)


def starter_config(source: Path, config_dir: Path, given: dict[str, str | None] | None = None) -> Starter:
    """The starter config for the log at ``source``; paths written relative to ``config_dir``;
    ``given``: the user, item or timestamp column where the caller names it (``--item`` etc.)."""
    source = Path(source)
    if not source.exists():
        raise DataError("not found; give a CSV/TSV/Parquet log or a MovieLens folder", file=str(source))
    where = os.path.relpath(source.resolve(), config_dir.resolve())
    said: list[str] = []
    left_out: list[str] = []
    if is_movielens_dir(source):
        data = read_movielens(source)
        events, users, items = data.events, data.users, data.items
        lines = ['format = "movielens"', f'path = "{where}"']
        said.append("a MovieLens release: its own reader takes users and items from its files")
        user_cols = list(users.columns) if users is not None else []
        item_cols = [c for c in (items.columns if items is not None else []) if c != "title"]
        if items is not None and "title" in items.columns:
            left_out.append(
                "item 'title': a text feature needs pip install 'embrecall[text]' (see README, Text features)"
            )
        user_table, item_table = users, items
        counts = events["item_id"].value_counts()
    else:
        frame, delimiter, header = _sample(source)
        cols = _infer_columns(frame, said, given)
        item_cols, user_cols = [], []
        for c in frame.columns:
            if c in cols.values():
                continue
            if frame[c].nunique() >= 0.9 * len(frame):
                left_out.append(f"'{c}': a different value on almost every row (a row id, not a feature)")
            elif _per(frame, cols["item"], c):
                item_cols.append(c)
            elif _per(frame, cols["user"], c):
                user_cols.append(c)
            elif (
                "event" not in cols
                and frame[c].nunique() <= 20
                and pd.to_numeric(frame[c], errors="coerce").isna().all()
            ):
                cols["event"] = c
                said.append(
                    f"event type: column '{c}' ({frame[c].nunique()} types such as {frame[c].iloc[0]!r}; every "
                    "one counts as a positive: set data.events to keep some)"
                )
            else:
                kind = _per_event(frame[c])
                left_out.append(
                    f"'{c}': {kind}, neither an item's nor a user's attribute (every event counts as "
                    "a positive under BENCHMARK.md; add it to data.context_columns to use it as context)"
                )
        mapping = ", ".join(f'{k} = "{v}"' for k, v in cols.items() if k != "timestamp_format")
        lines = [
            'format = "table"',
            f'path = "{where}"',
            f"columns = {{ {mapping} }}",
            f'timestamp_format = "{cols["timestamp_format"]}"',
        ]
        if delimiter != ",":
            lines.append(f"delimiter = {delimiter!r}".replace("'", '"'))
        if not header:
            lines.append("header = false")
        if item_cols:
            lines.append(f"item_columns = {item_cols}".replace("'", '"'))
        if user_cols:
            lines.append(f"user_columns = {user_cols}".replace("'", '"'))
        events = frame.rename(columns={cols["user"]: "user_id", cols["item"]: "item_id"})
        counts = _item_counts(source, cols["item"], delimiter, header)
        item_table = events.groupby("item_id")[item_cols].last() if item_cols else None
        user_table = events.groupby("user_id")[user_cols].last() if user_cols else None
        for side, key in (("user", cols["user"]), ("item", cols["item"])):
            found = _side_table(source, side, key, config_dir, said, left_out)
            if found is None:
                continue
            line, table = found
            lines.append(line)
            if side == "user":
                user_cols, user_table = (
                    user_cols + list(table.columns),
                    table if user_table is None else user_table.join(table),
                )
            else:
                item_cols, item_table = (
                    item_cols + list(table.columns),
                    table if item_table is None else item_table.join(table),
                )
    per_user = float(events.groupby("user_id").size().median())
    user = [f'kind = "categorical"\nname = "user_id"\ndim = 32\nmin_count = {1 if per_user >= 10 else 2}']
    said.append(f"user_id: categorical (ids seen once {'kept' if per_user >= 10 else 'share one vector: min_count 2'})")
    user += _features(user_cols, user_table, said, "user")
    user += _history_features(per_user, said)
    item = ['kind = "item_id"', *_features(item_cols, item_table, said, "item")]
    served = _served(counts, said)
    return Starter(_toml(lines, user, item, said, served), said, left_out)
