"""The exceptions embrecall raises on bad input, bad configuration or misuse.

EmbrecallError            base: catch this to handle every embrecall failure
├── DataError             input data is missing, malformed or inconsistent (names file/row/column)
│   └── NothingNew        no event newer than the version an update would train on from
├── ConfigError           the run configuration is invalid (names the field)
├── NotFittedError        a model or encoder is used before ``fit``
├── BundleError           a bundle on disk is missing, incomplete or incompatible
├── GateBreach            figures out of line with earlier versions: downstream tasks should stop (exit 3)
└── Unavailable           a backing store (Redis) cannot take a change now; the service answers 503
"""

from __future__ import annotations

__all__ = [
    "EmbrecallError",
    "DataError",
    "NothingNew",
    "ConfigError",
    "NotFittedError",
    "BundleError",
    "GateBreach",
    "Unavailable",
]


class EmbrecallError(Exception):
    """Base class of every error embrecall raises on purpose."""


class DataError(EmbrecallError):
    """Input data cannot be used as given; the message says where and what was expected."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, column: str | None = None):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        self.file, self.row, self.column = file, row, column
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class NothingNew(DataError):
    """The log holds no event after the version an update trains on from: nothing to do (exit 0)."""


class ConfigError(EmbrecallError):
    """The configuration is invalid; the message names the field and the accepted values."""


class NotFittedError(EmbrecallError):
    """An object that learns from data was used before it was fitted."""


class BundleError(EmbrecallError):
    """A bundle directory cannot be loaded or does not match what it is used with."""


class GateBreach(EmbrecallError):
    """A gate refused (a publish, or an incoming log whose volumes are off): the CLI exits 3, not 2,
    so a scheduler halts the tasks after it rather than retrying a failure (DeWu's anomaly blocking)."""

    def __init__(self, message: str, breaches: list[str]):
        self.breaches = breaches
        super().__init__(message)


class Unavailable(EmbrecallError):
    """A change cannot be stored or shared now (its store is down); sending it again later may work."""
