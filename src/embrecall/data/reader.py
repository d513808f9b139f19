"""One reader for every log and feature table, CSV or Parquet, through pyarrow.

The in-memory log, the sharded log's partition pass and ``init`` all read with it: whole,
in batches or as a sample. Every CSV cell stays a string, so ``007`` is not ``7``. The reader
takes UTF-8 with or without a BOM and quoted fields, and skips blank lines. A last line cut short
(a partial copy) is left out with a note. Any other malformed line is a DataError that names the
file and the line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from embrecall.errors import DataError

__all__ = ["Source", "open_source", "is_parquet"]

_CUT_NOTE = (
    "{path}: the last line ends without a newline and has fewer fields than the others "
    "(a copy cut at a byte boundary); it was left out"
)


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _last_line(path: Path) -> str | None:
    """The file's last line when no newline ends it (a copy cut short ends so), else None."""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 65536))
        tail = fh.read()
    if not tail or tail.endswith(b"\n"):
        return None
    return tail.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace").rstrip("\r")


@dataclass
class _BadLines:
    """pyarrow's handler for a line whose field count is not the header's. The cut-short last
    line is skipped with a note. Any other such line is skipped when ``skip`` is set (a sample
    for ``init``), else it stops the read, and the read's error names it."""

    path: Path
    notes: list[str]
    skip: bool
    last: str | None
    bad: str = ""

    def __call__(self, row: pacsv.InvalidRow) -> str:
        if row.actual_columns < row.expected_columns and row.text == self.last:
            note = _CUT_NOTE.format(path=self.path)
            if note not in self.notes:
                self.notes.append(note)
            return "skip"
        if self.skip:
            return "skip"
        where = f"line {row.number}" if row.number is not None else "a line"  # blank lines not counted
        self.bad = f"{where} has {row.actual_columns} fields, the header {row.expected_columns}: {row.text[:200]!r}"
        return "error"


@dataclass
class Source:
    """A log or table file opened for reading: its columns, and the file line of its first data
    row (error messages name lines from it)."""

    path: Path
    dataset: pads.Dataset
    first_line: int
    bad_lines: _BadLines | None

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.schema.names)

    def batches(self, columns: Sequence[str] | None = None, rows: int = 1 << 20) -> Iterator[pd.DataFrame]:
        """The file ``rows`` rows at a time (fewer where the file's blocks end), in file order."""
        # Read ahead by one batch, not pyarrow's 16 (at a million rows a batch and a consumer slower
        # than the reader, those held 4.9 GB of a 100M-event log in memory).
        scanner = self.dataset.scanner(
            columns=None if columns is None else list(columns), batch_size=rows, batch_readahead=1, fragment_readahead=1
        )
        try:
            for batch in scanner.to_batches():
                if batch.num_rows:
                    yield batch.to_pandas()
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(_reason(err, self.bad_lines), file=str(self.path)) from None

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The whole file, refused when it holds no data row."""
        frames = list(self.batches(columns))
        if not frames:
            raise DataError("the file has no data rows", file=str(self.path))
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def head(self, rows: int) -> pd.DataFrame:
        """The first ``rows`` rows, read no further than they need."""
        frames, have = [], 0
        for frame in self.batches(rows=min(rows, 1 << 16)):
            frames.append(frame)
            have += len(frame)
            if have >= rows:
                break
        if not frames:
            raise DataError("the file has no data rows", file=str(self.path))
        return pd.concat(frames, ignore_index=True).iloc[:rows]


def _reason(err: Exception, bad_lines: _BadLines | None) -> str:
    """What went wrong reading, in the user's terms."""
    if bad_lines is not None and bad_lines.bad:
        return f"not a well-formed delimited file: {bad_lines.bad}"
    if "Empty CSV file" in str(err):
        return "the file is empty; expected a header line and at least one row"
    if "invalid UTF8" in str(err):
        return "not UTF-8 text; re-encode the file as UTF-8"
    return f"cannot read the file: {err}"


def open_source(
    path: Path | str,
    notes: list[str],
    *,
    delimiter: str = ",",
    header: bool = True,
    bad_lines: Literal["error", "skip"] = "error",
) -> Source:
    """Open ``path``: Parquet by its suffix, else delimited text. A headerless file's columns are
    named by position (``"0"``, ``"1"``, …), as the config names them."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    if is_parquet(path):
        try:
            return Source(path, pads.dataset(path, format="parquet"), 1, None)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"cannot read as Parquet: {err}", file=str(path)) from None
    handler = _BadLines(path, notes, bad_lines == "skip", _last_line(path))
    parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=handler)
    try:  # the first block gives the columns; then every one is read as a string
        probe = pads.dataset(
            path,
            format=pads.CsvFileFormat(
                parse_options=parse, read_options=pacsv.ReadOptions(autogenerate_column_names=not header)
            ),
        )
        count = len(probe.schema.names)
        names = probe.schema.names if header else [str(i) for i in range(count)]
        fmt = pads.CsvFileFormat(
            parse_options=parse,
            read_options=pacsv.ReadOptions(column_names=None if header else names, encoding="utf8"),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
        dataset = pads.dataset(path, format=fmt)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(_reason(err, handler), file=str(path)) from None
    return Source(path, dataset, 2 if header else 1, handler)
