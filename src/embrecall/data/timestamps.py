"""Turn the many timestamp spellings of real exports into int64 unix seconds, or say which row is bad."""

from __future__ import annotations

import numpy as np
import pandas as pd

from embrecall.errors import DataError

__all__ = ["parse_timestamps", "MAX_TIMESTAMP"]

# Unix times above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 1e11
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01: later "times" are unit or parsing mistakes, not events
_HINT = "set data.timestamp_format (unix_s, unix_ms, iso8601 or a strptime format such as %m/%d/%Y)"


def _first_bad(mask: pd.Series, raw: pd.Series, file: str, column: str, first_line: int, expected: str) -> DataError:
    pos = int(np.flatnonzero(mask.to_numpy())[0])
    n_bad = int(mask.sum())
    return DataError(
        f"cannot use timestamp {raw.iloc[pos]!r}; expected {expected} "
        f"({n_bad:,} such value{'s' if n_bad > 1 else ''} in this column; {_HINT})",
        file=file,
        row=first_line + pos,
        column=column,
    )


def _in_range(seconds: np.ndarray, raw: pd.Series, file: str, column: str, first_line: int) -> np.ndarray:
    """``seconds`` as int64 once every value lies in 1970..2100 (beyond, int64 or pandas would overflow)."""
    bad = ~((seconds >= 0) & (seconds < MAX_TIMESTAMP))
    if bad.any():
        raise _first_bad(pd.Series(bad), raw, file, column, first_line, "a time between 1970 and 2100")
    return seconds.astype(np.int64)


def _numeric(raw: pd.Series, file: str, column: str, first_line: int, unit: str | None) -> np.ndarray:
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna()
    if bad.any():
        raise _first_bad(bad, raw, file, column, first_line, "a unix time in seconds or milliseconds")
    arr = values.to_numpy(dtype=np.float64)
    if unit is None:
        unit = "ms" if np.nanmax(np.abs(arr)) > _MS_THRESHOLD else "s"
    seconds = arr / 1000.0 if unit == "ms" else arr
    return _in_range(np.floor(seconds), raw, file, column, first_line)


def _dates(raw: pd.Series, file: str, column: str, first_line: int, fmt: str) -> np.ndarray:
    parsed = pd.to_datetime(raw, format=fmt, errors="coerce", utc=True)
    bad = parsed.isna()
    if bad.any():
        expected = "an ISO-8601 date/time" if fmt == "ISO8601" else f"the format {fmt!r}"
        raise _first_bad(bad, raw, file, column, first_line, expected)
    seconds = parsed.dt.as_unit("s").astype("int64").to_numpy(dtype=np.int64)
    return _in_range(seconds, raw, file, column, first_line)


def parse_timestamps(raw: pd.Series, fmt: str, *, file: str, column: str, first_line: int) -> np.ndarray:
    """Parse ``raw`` into unix seconds.

    ``fmt``: ``auto`` (numbers as unix seconds or milliseconds by magnitude, otherwise ISO-8601),
    ``unix_s``, ``unix_ms``, ``iso8601``, or a strptime format such as ``%m/%d/%Y``.
    ``first_line`` is the file line of ``raw``'s first value, so errors point at the right row.
    """
    if len(raw) == 0:
        return np.zeros(0, dtype=np.int64)
    if fmt == "unix_s":
        return _numeric(raw, file, column, first_line, "s")
    if fmt == "unix_ms":
        return _numeric(raw, file, column, first_line, "ms")
    if fmt == "iso8601":
        return _dates(raw.astype(str), file, column, first_line, "ISO8601")
    if fmt == "auto":
        if pd.api.types.is_numeric_dtype(raw):
            return _numeric(raw, file, column, first_line, None)
        text = raw.astype(str).str.strip()
        looks_numeric = text.str.fullmatch(r"-?\d+(\.\d+)?")
        if looks_numeric.all():
            return _numeric(text, file, column, first_line, None)
        if looks_numeric.any() and looks_numeric.iloc[0]:
            raise _first_bad(~looks_numeric, raw, file, column, first_line, "a unix time like the rows before it")
        return _dates(text, file, column, first_line, "ISO8601")
    return _dates(raw.astype(str), file, column, first_line, fmt)
