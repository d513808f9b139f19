"""The in-memory log: interactions from CSV or Parquet with a column mapping, plus feature tables.

Every problem is reported as a DataError naming the file, the line (1-based, header included)
and the column, with what was expected.  Ids stay strings, so ``007`` is not ``7``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from embrecall.config import DataConfig, TableConfig
from embrecall.data.dataset import Dataset
from embrecall.data.reader import open_source
from embrecall.data.timestamps import TimeColumn
from embrecall.errors import DataError

__all__ = ["require_columns", "read_table_dataset", "read_feature_tables", "check_numeric", "check_ids"]


def require_columns(have: list[str], columns: list[str], file: Path, role: str) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        raise DataError(
            f"missing {role} column(s) {missing}; the file has {have} "
            "(set the names in the [data] section of the config)",
            file=str(file),
        )


def check_ids(frame: pd.DataFrame, column: str, file: Path, first_line: int) -> np.ndarray:
    values = frame[column].astype(str).str.strip()
    empty = (values == "") | frame[column].isna() | (values.str.lower() == "nan")
    if empty.any():
        pos = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(
            f"empty id ({int(empty.sum()):,} such rows); every interaction needs a user and an item",
            file=str(file),
            row=first_line + pos,
            column=column,
        )
    return values.to_numpy(dtype=object)


def check_numeric(frame: pd.DataFrame, column: str, file: Path | str, first_line: int) -> pd.Series:
    """Convert ``column`` to float, refusing text and missing values with the first offending line."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | ~np.isfinite(values.fillna(0).to_numpy(dtype=np.float64))
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{raw.iloc[pos]!r} is not a number; expected a finite numeric value ({int(bad.sum()):,} such rows)",
            file=str(file),
            row=first_line + pos,
            column=column,
        )
    return values.astype(np.float64)


def _feature_table(
    cfg: TableConfig, numeric: list[str], delimiter: str, header: bool, notes: list[str]
) -> pd.DataFrame:
    source = open_source(cfg.path, notes, delimiter=delimiter, header=header)
    frame, first_line = source.read(), source.first_line
    require_columns(list(frame.columns), [cfg.key], cfg.path, "key")
    keys = check_ids(frame, cfg.key, cfg.path, first_line)
    dup = pd.Series(keys).duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)[:2] + first_line
        raise DataError(
            f"id {keys[np.flatnonzero(dup)[0]]!r} appears on more than one row (lines {rows[0]} and "
            f"{rows[1]}); a feature table needs one row per id",
            file=str(cfg.path),
            column=cfg.key,
        )
    for col in numeric:
        if col in frame.columns:
            frame[col] = check_numeric(frame, col, cfg.path, first_line)
    frame.index = pd.Index(keys, name=cfg.key)
    return frame.drop(columns=[cfg.key])


def _carried_table(events: pd.DataFrame, key: str, columns: list[str], notes: list[str]) -> pd.DataFrame:
    """Attributes carried on interaction rows: the latest row's value per id wins (a note says
    for how many ids the log holds more than one value, so a change of category is not silent)."""
    for c in columns:
        varying = events.groupby(key, sort=False)[c].nunique(dropna=False)
        if (varying > 1).any():
            example = varying.index[np.argmax(varying.to_numpy() > 1)]
            notes.append(
                f"column '{c}': {int((varying > 1).sum()):,} {key.removesuffix('_id')}s have more than one "
                f"value in the log (e.g. {example!r}); the latest value is used"
            )
    latest = events.sort_values("timestamp", kind="stable").drop_duplicates(key, keep="last")
    return latest.set_index(key)[columns]


def read_feature_tables(
    cfg: DataConfig, numeric: dict[str, list[str]], notes: list[str]
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The user and item feature tables ``cfg`` names (None where it names none), indexed by id."""
    users = items = None
    if cfg.users is not None:
        users = _feature_table(cfg.users, numeric.get("users", []), cfg.delimiter, cfg.header, notes)
    if cfg.items is not None:
        items = _feature_table(cfg.items, numeric.get("items", []), cfg.delimiter, cfg.header, notes)
        if cfg.items.title and cfg.items.title not in items.columns:
            raise DataError(
                f"title column '{cfg.items.title}' not found; the file has {list(items.columns)}",
                file=str(cfg.items.path),
            )
        if cfg.items.title:
            items = items.rename(columns={cfg.items.title: "title"})
    return users, items


def read_table_dataset(cfg: DataConfig, numeric: dict[str, list[str]]) -> Dataset:
    """Read ``cfg.path`` with ``cfg.columns``; ``numeric`` names the numeric columns per table
    (``events``, ``users``, ``items``) so bad values are refused here, with their line."""
    assert cfg.path is not None  # guaranteed by DataConfig validation
    path = Path(cfg.path)
    notes: list[str] = []
    source = open_source(path, notes, delimiter=cfg.delimiter, header=cfg.header)
    cols = cfg.columns
    needed = [cols.user, cols.item, cols.timestamp]
    extra = [c for c in (cols.event, cols.weight) if c] + cfg.context_columns + cfg.user_columns + cfg.item_columns
    require_columns(source.columns, needed, path, "interaction")
    require_columns(source.columns, extra, path, "configured")
    frame, first_line = source.read(list(dict.fromkeys(needed + extra))), source.first_line
    times = TimeColumn(cfg.timestamp_format, str(path), cols.timestamp)
    events = pd.DataFrame(
        {
            "user_id": check_ids(frame, cols.user, path, first_line),
            "item_id": check_ids(frame, cols.item, path, first_line),
            "timestamp": times.parse(frame[cols.timestamp], first_line),
        }
    )
    times.close()
    if cols.weight:
        events["weight"] = check_numeric(frame, cols.weight, path, first_line).to_numpy(np.float32)
    if cols.event:
        events["event"] = frame[cols.event].astype(str).to_numpy()
    for c in dict.fromkeys(cfg.context_columns + cfg.user_columns + cfg.item_columns):
        events[c] = (
            check_numeric(frame, c, path, first_line) if c in numeric.get("events", []) else frame[c].astype(str)
        ).to_numpy()

    users = _carried_table(events, "user_id", cfg.user_columns, notes) if cfg.user_columns else None
    items = _carried_table(events, "item_id", cfg.item_columns, notes) if cfg.item_columns else None
    user_table, item_table = read_feature_tables(cfg, numeric, notes)
    if user_table is not None:
        users = user_table if users is None else users.join(user_table, how="outer")
    if item_table is not None:
        items = item_table if items is None else items.join(item_table, how="outer")

    for side, table, col in (("user", users, "user_id"), ("item", items, "item_id")):
        if table is None:
            continue
        absent = ~events[col].isin(table.index)
        if absent.any():
            notes.append(
                f"{int(absent.sum()):,} interactions ({events.loc[absent, col].nunique():,} {side}s) have "
                f"no row in the {side} feature table; their {side} features are treated as unknown"
            )
    events = events.drop(columns=[c for c in cfg.user_columns + cfg.item_columns if c not in cfg.context_columns])
    return Dataset(events, users, items, source=str(path), notes=notes)
