"""Turn the many timestamp spellings of real exports into int64 unix seconds, or say which row is bad.

A column that cannot be a log's event times is refused, with the rows that disagree: unix
seconds mixed with milliseconds (read alike, half the rows would land in January 1970), every
row on one instant (a placeholder such as 0), or times far outside the span the rest of the
column covers (a year-9999 value, a zero among 2017's clicks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embrecall.errors import DataError

__all__ = ["parse_timestamps", "TimeColumn", "MAX_TIMESTAMP"]

# Unix times above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 1e11
# Above this and below the threshold, a number is seconds (1973..5138); below it, either (a counter).
_SECONDS_FLOOR = 1e8
_SLACK = 10  # a time further than this many spans of the column's middle half (quartiles) is refused
_MIN_SPAN = 30 * 86_400
_SAMPLE = 1_000_000  # times the quartiles are taken from (all of them in a column no longer than this)
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


def _rows(mask: np.ndarray, first_line: int, most: int = 3) -> str:
    rows = np.flatnonzero(mask)
    said = ", ".join(str(first_line + int(r)) for r in rows[:most])
    return said + (f" and {len(rows) - most:,} more" if len(rows) > most else "")


def _unit(arr: np.ndarray, raw: pd.Series, file: str, column: str, first_line: int, seen: str | None) -> str:
    """Seconds or milliseconds, by magnitude; refused when the values (or ``seen``, the unit of
    the column's earlier pieces) hold both."""
    ms = np.abs(arr) >= _MS_THRESHOLD
    s = (np.abs(arr) >= _SECONDS_FLOOR) & ~ms
    if (ms.any() or seen == "ms") and (s.any() or seen == "s"):
        odd = ms if (seen == "s" or (seen is None and ms.sum() <= s.sum())) else s
        pos = int(np.flatnonzero(odd)[0])
        raise DataError(
            f"the column mixes unix seconds and milliseconds: {raw.iloc[pos]!r} is "
            f"{'milliseconds' if ms[pos] else 'seconds'} where the other rows are not (rows "
            f"{_rows(odd, first_line)}); fix those rows or {_HINT}",
            file=file,
            row=first_line + pos,
            column=column,
        )
    return "ms" if ms.any() or seen == "ms" else "s"


def _numeric(
    raw: pd.Series, file: str, column: str, first_line: int, unit: str | None, seen: str | None = None
) -> tuple[np.ndarray, str]:
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna()
    if bad.any():
        raise _first_bad(bad, raw, file, column, first_line, "a unix time in seconds or milliseconds")
    arr = values.to_numpy(dtype=np.float64)
    unit = unit or _unit(arr, raw, file, column, first_line, seen)
    seconds = arr / 1000.0 if unit == "ms" else arr
    return _in_range(np.floor(seconds), raw, file, column, first_line), unit


def _dates(raw: pd.Series, file: str, column: str, first_line: int, fmt: str) -> np.ndarray:
    parsed = pd.to_datetime(raw, format=fmt, errors="coerce", utc=True)
    bad = parsed.isna()
    if bad.any():
        expected = "an ISO-8601 date/time" if fmt == "ISO8601" else f"the format {fmt!r}"
        raise _first_bad(bad, raw, file, column, first_line, expected)
    seconds = parsed.dt.as_unit("s").astype("int64").to_numpy(dtype=np.int64)
    return _in_range(seconds, raw, file, column, first_line)


def _parse(
    raw: pd.Series, fmt: str, file: str, column: str, first_line: int, seen: str | None
) -> tuple[np.ndarray, str | None]:
    """Unix seconds, and the unit numbers were read in (None for dates)."""
    if fmt in ("unix_s", "unix_ms"):
        return _numeric(raw, file, column, first_line, fmt.removeprefix("unix_"))
    if fmt == "iso8601":
        return _dates(raw.astype(str), file, column, first_line, "ISO8601"), None
    if fmt == "auto":
        if pd.api.types.is_numeric_dtype(raw):
            return _numeric(raw, file, column, first_line, None, seen)
        text = raw.astype(str).str.strip()
        looks_numeric = text.str.fullmatch(r"-?\d+(\.\d+)?")
        if looks_numeric.all():
            return _numeric(text, file, column, first_line, None, seen)
        if looks_numeric.any() and looks_numeric.iloc[0]:
            raise _first_bad(~looks_numeric, raw, file, column, first_line, "a unix time like the rows before it")
        return _dates(text, file, column, first_line, "ISO8601"), None
    return _dates(raw.astype(str), file, column, first_line, fmt), None


def parse_timestamps(raw: pd.Series, fmt: str, *, file: str, column: str, first_line: int) -> np.ndarray:
    """Parse ``raw`` into unix seconds.

    ``fmt``: ``auto`` (numbers as unix seconds or milliseconds by magnitude, otherwise ISO-8601),
    ``unix_s``, ``unix_ms``, ``iso8601``, or a strptime format such as ``%m/%d/%Y``.
    ``first_line`` is the file line of ``raw``'s first value, so errors point at the right row.
    """
    if len(raw) == 0:
        return np.zeros(0, dtype=np.int64)
    return _parse(raw, fmt, file, column, first_line, None)[0]


class TimeColumn:
    """A log's timestamp column, read whole or piece by piece (a sharded log's batches), checked as
    one column: numbers keep the unit the first piece showed, so seconds and milliseconds cannot
    mix across pieces either; ``close`` refuses a column whose every row holds one instant, or
    whose times lie far outside the span its middle half covers (Tukey's fences, wide: ten spans,
    a span at least 30 days), judged on the whole column, not on one piece (a log sorted by time
    has pieces of a few days each)."""

    def __init__(self, fmt: str, file: str, column: str):
        self.fmt, self.file, self.column = fmt, file, column
        self.unit: str | None = None
        self.first: int | None = None
        self.varies = False
        self.rows = 0
        self.sample = np.zeros(0, dtype=np.int64)  # a uniform sample of the column, for its quartiles
        self.extremes: list[tuple[int, int, str]] = []  # each piece's earliest and latest: line, seconds, raw
        self.rng = np.random.default_rng(0)

    def parse(self, raw: pd.Series, first_line: int) -> np.ndarray:
        if len(raw) == 0:
            return np.zeros(0, dtype=np.int64)
        seconds, self.unit = _parse(raw, self.fmt, self.file, self.column, first_line, self.unit)
        if self.fmt == "auto":  # a format given is a promise that the times are what they say
            self._keep(seconds, raw, first_line)
        self.first = int(seconds[0]) if self.first is None else self.first
        self.varies = self.varies or bool((seconds != self.first).any())
        self.rows += len(seconds)
        return seconds

    def _keep(self, seconds: np.ndarray, raw: pd.Series, first_line: int) -> None:
        """What the span check needs of one piece: its extremes, and its share of the sample."""
        for pos in dict.fromkeys((int(seconds.argmin()), int(seconds.argmax()))):
            self.extremes.append((first_line + pos, int(seconds[pos]), str(raw.iloc[pos])))
        total = self.rows + len(seconds)
        if total <= _SAMPLE:
            self.sample = np.concatenate([self.sample, seconds])
            return
        old = self.rng.choice(self.sample, min(len(self.sample), round(_SAMPLE * self.rows / total)), replace=False)
        self.sample = np.concatenate([old, self.rng.choice(seconds, _SAMPLE - len(old), replace=False)])

    def close(self) -> None:
        if self.rows > 1 and not self.varies:
            when = pd.Timestamp(self.first, unit="s").isoformat()
            raise DataError(
                f"every one of the {self.rows:,} rows has the same time ({when}): the column holds no "
                f"event times (a placeholder?); point data.columns.timestamp at the column that does",
                file=self.file,
                column=self.column,
            )
        if self.rows < 3 or not self.extremes:
            return
        low, high = np.percentile(self.sample, [25, 75], method="nearest")
        span = max(float(high - low), _MIN_SPAN)
        far = sorted(e for e in self.extremes if not low - _SLACK * span <= e[1] <= high + _SLACK * span)
        if far:
            line, seconds, raw = far[0]
            day = lambda t: pd.Timestamp(int(t), unit="s").strftime("%Y-%m-%d")  # noqa: E731
            rows = ", ".join(str(e[0]) for e in far[:3]) + (" and more" if len(far) > 3 else "")
            raise DataError(
                f"time {raw!r} ({day(seconds)}) is far outside the span of the other rows (their middle "
                f"half: {day(low)} to {day(high)}; for instance rows {rows}): a placeholder or a unit "
                f"mistake? Fix those rows, or set data.timestamp_format to read them as they are",
                file=self.file,
                row=line,
                column=self.column,
            )
