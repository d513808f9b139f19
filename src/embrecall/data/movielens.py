"""Readers for the GroupLens MovieLens releases, in their formats exactly as published.

A directory is recognised by its files:
- 100K: ``u.data`` (tab: user item rating timestamp), ``u.item`` (pipe, latin-1, 19 genre flags),
  ``u.user`` (pipe: id age gender occupation zip), ``u.genre``.
- 1M / 10M: ``ratings.dat`` (``::``), ``movies.dat`` (``MovieID::Title::Genres``), 1M also ``users.dat``.
- 20M / 25M / latest: ``ratings.csv`` and ``movies.csv`` with headers, and ``tags.csv`` where the
  release has it: each movie's 10 most used tags become the multi-valued item column ``tags``
  (item metadata like the genres; users applied them at any time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from embrecall.data.dataset import Dataset
from embrecall.errors import DataError

__all__ = ["read_movielens", "is_movielens_dir"]

_ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def is_movielens_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("u.data", "ratings.dat", "ratings.csv"))


def _events_frame(users: pd.Series, items: pd.Series, ts: pd.Series, rating: pd.Series, file: Path) -> pd.DataFrame:
    if len(users) == 0:
        raise DataError("no ratings found; expected one rating per line", file=str(file))
    stamp = pd.to_numeric(ts, errors="coerce")
    if stamp.isna().any():
        pos = int(np.flatnonzero(stamp.isna().to_numpy())[0])
        raise DataError(
            f"timestamp {ts.iloc[pos]!r} is not a unix time", file=str(file), row=pos + 1, column="timestamp"
        )
    return pd.DataFrame(
        {
            "user_id": users.astype(str).to_numpy(),
            "item_id": items.astype(str).to_numpy(),
            "timestamp": stamp.to_numpy(dtype=np.int64),
            "weight": pd.to_numeric(rating, errors="coerce").to_numpy(dtype=np.float32),
        }
    )


def _read_lines(path: Path, sep: str, names: list[str], encoding: str) -> pd.DataFrame:
    """Read a separator file whose text fields may contain the separator's characters (titles)."""
    if not path.is_file():
        raise DataError("file not found; a MovieLens directory must contain it", file=str(path))
    rows = []
    with path.open(encoding=encoding) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split(sep)
            if len(parts) != len(names):
                raise DataError(
                    f"expected {len(names)} fields separated by {sep!r} ({', '.join(names)}), found {len(parts)}",
                    file=str(path),
                    row=lineno,
                )
            rows.append(parts)
    return pd.DataFrame(rows, columns=names)


def _user_table(path: Path, sep: str, names: list[str]) -> pd.DataFrame | None:
    """The optional user file of a release, indexed by user id (10M and later have none)."""
    if not path.is_file():
        return None
    return _read_lines(path, sep, names, "latin-1").set_index("user_id")


def _year_from_title(titles: pd.Series) -> pd.Series:
    return titles.str.extract(r"\((\d{4})\)\s*$", expand=False)


def _read_100k(d: Path) -> Dataset:
    f = d / "u.data"
    raw = pd.read_csv(f, sep="\t", header=None, names=["user", "item", "rating", "ts"], dtype=str)
    events = _events_frame(raw["user"], raw["item"], raw["ts"], raw["rating"], f)
    item_names = ["item_id", "title", "release_date", "video_release_date", "url"] + _ML100K_GENRES
    items = _read_lines(d / "u.item", "|", item_names, "latin-1")
    flags = items[_ML100K_GENRES].to_numpy() == "1"
    items["genres"] = ["|".join(g for g, on in zip(_ML100K_GENRES, row) if on) for row in flags]
    items["year"] = items["release_date"].str[-4:].where(items["release_date"].str.len() > 0)
    items = items[["item_id", "title", "genres", "year"]].set_index("item_id")
    users = _user_table(d / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"])
    return Dataset(events, users, items, source=f"MovieLens 100K ({d})")


def _read_dat(d: Path) -> Dataset:
    f = d / "ratings.dat"
    # Fields are numbers, so '::' can be read as ':' with empty columns between: the fast C parser.
    raw = pd.read_csv(f, sep=":", header=None, usecols=[0, 2, 4, 6], names=["user", "item", "rating", "ts"], dtype=str)
    events = _events_frame(raw["user"], raw["item"], raw["ts"], raw["rating"], f)
    items = _read_lines(d / "movies.dat", "::", ["item_id", "title", "genres"], "latin-1")
    items["year"] = _year_from_title(items["title"])
    items = items.set_index("item_id")
    users = _user_table(d / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip"])
    return Dataset(events, users, items, source=f"MovieLens .dat ({d})")


def _read_csv(d: Path) -> Dataset:
    f = d / "ratings.csv"
    raw = pd.read_csv(f, dtype=str)
    missing = {"userId", "movieId", "rating", "timestamp"} - set(raw.columns)
    if missing:
        raise DataError(
            f"missing columns {sorted(missing)}; expected header userId,movieId,rating,timestamp", file=str(f)
        )
    events = _events_frame(raw["userId"], raw["movieId"], raw["timestamp"], raw["rating"], f)
    items = None
    if (d / "movies.csv").is_file():
        items = pd.read_csv(d / "movies.csv", dtype=str, keep_default_na=False)
        items = items.rename(columns={"movieId": "item_id"}).set_index("item_id")
        items["genres"] = items["genres"].replace("(no genres listed)", "")
        items["year"] = _year_from_title(items["title"])
    if (d / "tags.csv").is_file():
        tags = _top_tags(d / "tags.csv")
        items = tags.to_frame() if items is None else items.join(tags, how="left")
        items["tags"] = items["tags"].fillna("")
    return Dataset(events, None, items, source=f"MovieLens CSV ({d})")


def _top_tags(f: Path, top: int = 10) -> pd.Series:
    """Each movie's ``top`` most used tags (lowercased), '|'-joined, indexed by item_id."""
    raw = pd.read_csv(f, dtype=str, keep_default_na=False)
    missing = {"movieId", "tag"} - set(raw.columns)
    if missing:
        raise DataError(f"missing columns {sorted(missing)}; expected header userId,movieId,tag,timestamp", file=str(f))
    tag = raw["tag"].str.strip().str.lower().str.replace("|", " ", regex=False)
    counts = pd.DataFrame({"item_id": raw["movieId"], "tag": tag})[tag != ""].value_counts()
    ranked = counts.reset_index().sort_values(["item_id", "count", "tag"], ascending=[True, False, True], kind="stable")
    return ranked.groupby("item_id").head(top).groupby("item_id")["tag"].agg("|".join).rename("tags")


def read_movielens(path: Path) -> Dataset:
    """Read any MovieLens release directory; every rating counts as one implicit positive."""
    d = Path(path)
    if not d.is_dir():
        raise DataError("not a directory; expected a MovieLens release folder", file=str(d))
    if (d / "u.data").is_file():
        return _read_100k(d)
    if (d / "ratings.dat").is_file():
        return _read_dat(d)
    if (d / "ratings.csv").is_file():
        return _read_csv(d)
    raise DataError(
        "no MovieLens ratings file found; expected u.data (100K), ratings.dat (1M/10M) or ratings.csv (20M/25M/latest)",
        file=str(d),
    )
