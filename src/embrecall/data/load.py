"""Read the data a config names, whatever its format, into a validated Dataset."""

from __future__ import annotations

from embrecall.config import Config, NumericFeature
from embrecall.data.dataset import Dataset
from embrecall.data.movielens import read_movielens
from embrecall.data.synthetic import generate
from embrecall.data.table import read_table_dataset
from embrecall.errors import DataError

__all__ = ["load_dataset", "numeric_columns"]


def numeric_columns(cfg: Config) -> dict[str, list[str]]:
    """Which columns must hold numbers, per table, from the numeric features of the spec."""
    out: dict[str, list[str]] = {"events": [], "users": [], "items": []}
    for side, feats in (("users", cfg.features.user), ("items", cfg.features.item)):
        for f in feats:
            if isinstance(f, NumericFeature):
                out["events" if f.source == "event" else side].append(f.input_column)
                if f.source == "table":
                    out["events"].append(f.input_column)  # the column may be carried on interaction rows
    return out


def _select_events(data: Dataset, cfg: Config) -> Dataset:
    """Positives are the rows of ``data.events`` types (all but the exposure types when unset);
    rows of ``data.exposure_events`` types become ``data.exposures``."""
    d = cfg.data
    if d.events is None and not d.exposure_events:
        return data
    if "event" not in data.events.columns:
        raise DataError(
            "data.events / data.exposure_events filter event types, but the interactions have no event "
            "column; name it in data.columns.event",
            file=data.source,
        )
    kind = data.events["event"]
    exposure = kind.isin(d.exposure_events).to_numpy()
    positive = kind.isin(d.events).to_numpy() if d.events is not None else ~exposure
    if not positive.any():
        raise DataError(
            f"no row has an event type in {d.events}; the data has {sorted(kind.unique())[:10]}",
            file=data.source,
            column="event",
        )
    if not positive.all():
        data.notes.append(
            f"kept {int(positive.sum()):,} of {len(positive):,} rows as positives "
            f"(event types {d.events or 'other than ' + str(d.exposure_events)})"
            + (f"; {int(exposure.sum()):,} exposure rows kept for negatives" if exposure.any() else "")
        )
    data.exposures = data.events[exposure].reset_index(drop=True) if exposure.any() else None
    data.events = data.events[positive].reset_index(drop=True)
    return data


def load_dataset(cfg: Config) -> Dataset:
    """Read ``cfg.data`` (synthetic, a MovieLens directory, or a mapped CSV/Parquet file)."""
    d = cfg.data
    if d.format == "synthetic":
        data = generate(d.synthetic)
    elif d.format == "movielens":
        data = read_movielens(d.path)  # type: ignore[arg-type]
    else:
        data = read_table_dataset(d, numeric_columns(cfg))
    data = _select_events(data, cfg)
    if len(data.events) == 0:
        raise DataError("no interactions left to train on", file=data.source)
    return data
