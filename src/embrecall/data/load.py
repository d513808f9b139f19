"""Read the data a config names, whatever its format, into a validated Dataset."""

from __future__ import annotations

from embrecall.config import Config, NumericFeature
from embrecall.data.dataset import Dataset
from embrecall.data.movielens import read_movielens
from embrecall.data.synthetic import generate
from embrecall.data.table import read_table_dataset
from embrecall.errors import DataError

__all__ = ["load_dataset"]


def _numeric_columns(cfg: Config) -> dict[str, list[str]]:
    """Which columns must hold numbers, per table, from the numeric features of the spec."""
    out: dict[str, list[str]] = {"events": [], "users": [], "items": []}
    for side, feats in (("users", cfg.features.user), ("items", cfg.features.item)):
        for f in feats:
            if isinstance(f, NumericFeature):
                out["events" if f.source == "event" else side].append(f.input_column)
                if f.source == "table":
                    out["events"].append(f.input_column)  # the column may be carried on interaction rows
    return out


def load_dataset(cfg: Config) -> Dataset:
    """Read ``cfg.data`` (synthetic, a MovieLens directory, or a mapped CSV/Parquet file)."""
    d = cfg.data
    if d.format == "synthetic":
        data = generate(d.synthetic)
    elif d.format == "movielens":
        data = read_movielens(d.path)  # type: ignore[arg-type]
    else:
        data = read_table_dataset(d, _numeric_columns(cfg))
    if len(data.events) == 0:
        raise DataError("no interactions left to train on", file=data.source)
    return data
