"""A synthetic interaction log with the shape of a real feed, so the pipeline runs with nothing downloaded.

Users have a few favourite categories; items have a category, a city, a price and a title;
popularity inside a category is Zipf-like (the item of rank r is drawn with probability ~1/r);
each user's events come in sessions that stay in one category, seconds apart within a session
and about a day apart between sessions.  With ``scenes``, each session happens in one scene (DeWu's
dozens of scenes served by one model): s0 is the largest, every next one about 0.45 times as large;
half of a scene's sessions go to its featured categories, and each scene has its own popular items
inside a category, so the scene changes what a user clicks.  With ``interests``, the user table holds
each user's favourite categories mixed with a varying number of generic tags that say nothing.
Generation is vectorised and goes user chunk by user chunk, so ``write_parquet`` makes 10M events
over 1M items in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from embrecall.config import SyntheticConfig
from embrecall.data.dataset import Dataset

__all__ = ["generate", "write_parquet"]

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fe", "gu", "hi", "jo", "qu"]
_START = 1_700_000_000  # 2023-11-14, unix seconds
_CHUNK_EVENTS = 1_000_000  # events generated and written at a time: bounds memory whatever the total


def _word(n: int) -> str:
    syl = [_SYLLABLES[(n >> (4 * k)) & 15] for k in range(3)]
    return "".join(syl)


class _World:
    """Items and users, fixed for a seed; events are drawn from them chunk by chunk."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        # Items grouped by category; inside a category, position = popularity rank.
        share = rng.dirichlet(np.full(cfg.categories, 2.0))
        counts = 1 + rng.multinomial(cfg.items - cfg.categories, share)  # every category non-empty
        self.cat_size = counts
        self.cat_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.n_items = int(counts.sum())
        self.item_category = np.repeat(np.arange(cfg.categories), counts)
        self.item_city = rng.integers(0, cfg.cities, self.n_items)
        self.item_price = np.round(rng.lognormal(3.0 + 0.1 * self.item_category % 7, 0.6), 2)
        words = rng.integers(0, 6, (self.n_items, 2)) + self.item_category[:, None] * 6
        generic = rng.integers(0, 200, self.n_items) + 10_000
        self.item_title = [f"{_word(a)} {_word(b)} {_word(g)}" for (a, b), g in zip(words, generic)]
        self.user_city = rng.integers(0, cfg.cities, cfg.users)
        self.user_age = rng.integers(18, 70, cfg.users)
        self.user_interest = rng.integers(0, cfg.categories, (cfg.users, 3))
        # Events per user: heavy-tailed, every user at least one, total exactly cfg.events.
        activity = rng.lognormal(0.0, 1.0, cfg.users)
        extra = max(0, cfg.events - cfg.users)
        self.user_events = 1 + rng.multinomial(extra, activity / activity.sum())
        if cfg.scenes:  # drawn after everything else, so a log without scenes stays what it was
            weight = 0.45 ** np.arange(cfg.scenes)
            self.scene_share = weight / weight.sum()
            featured = max(1, cfg.categories // cfg.scenes)
            self.scene_categories = np.stack(
                [rng.choice(cfg.categories, featured, replace=False) for _ in range(cfg.scenes)]
            )  # (scenes, featured)
            self.scene_shift = rng.integers(0, 1 << 30, (cfg.scenes, cfg.categories))  # rotates popularity ranks

    def items(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "item_id": [f"i{n}" for n in range(self.n_items)],
                "category": [f"c{c}" for c in self.item_category],
                "city": [f"city{c}" for c in self.item_city],
                "price": self.item_price,
                "title": self.item_title,
            }
        )

    def users(self) -> pd.DataFrame:
        frame = pd.DataFrame(
            {
                "user_id": [f"u{n}" for n in range(self.cfg.users)],
                "city": [f"city{c}" for c in self.user_city],
                "age": self.user_age,
            }
        )
        if self.cfg.interests:
            rng = np.random.default_rng(self.cfg.seed + 2)
            generic = rng.integers(0, 6, self.cfg.users)  # 0..5 tags that carry no signal
            frame["interests"] = [
                "|".join(
                    rng.permutation(
                        [f"c{c}" for c in dict.fromkeys(favourites)] + [f"t{t}" for t in rng.integers(0, 50, g)]
                    )
                )
                for favourites, g in zip(self.user_interest.tolist(), generic)
            ]
        return frame

    def events(self, first_user: int, last_user: int, rng: np.random.Generator) -> pd.DataFrame:
        users = np.arange(first_user, last_user)
        n = self.user_events[first_user:last_user]
        ev_user = np.repeat(users, n)
        total = len(ev_user)
        starts = np.concatenate([[0], np.cumsum(n)[:-1]])
        pos = np.arange(total) - np.repeat(starts, n)
        # Sessions: a new one starts with probability 1/5 after each event (mean length 5).
        new_session = (pos == 0) | (rng.random(total) < 0.2)
        session = np.cumsum(new_session) - 1
        n_sessions = int(session[-1]) + 1 if total else 0
        sess_user = ev_user[new_session]
        favourite = self.user_interest[sess_user, rng.integers(0, 3, n_sessions)]
        wander = rng.random(n_sessions) < 0.15
        sess_cat = np.where(wander, rng.integers(0, self.cfg.categories, n_sessions), favourite)
        if self.cfg.scenes:
            sess_scene = rng.choice(self.cfg.scenes, n_sessions, p=self.scene_share)
            picked = self.scene_categories[sess_scene, rng.integers(0, self.scene_categories.shape[1], n_sessions)]
            sess_cat = np.where(rng.random(n_sessions) < 0.5, picked, sess_cat)
        cat = sess_cat[session]
        # Zipf inside the category: rank = floor(size ** u) - 1 has P(rank < r) = log(r + 1) / log(size).
        size = self.cat_size[cat]
        rank = np.minimum(np.floor(size.astype(np.float64) ** rng.random(total)).astype(np.int64) - 1, size - 1)
        if self.cfg.scenes:
            rank = (rank + self.scene_shift[sess_scene[session], cat]) % size
        item = self.cat_start[cat] + rank
        gap = np.where(new_session, rng.exponential(86_400.0, total), rng.exponential(60.0, total))
        t0 = _START + rng.integers(0, 30 * 86_400, len(users))
        cum = np.cumsum(gap)
        ts = np.repeat(t0, n) + (cum - np.repeat(cum[starts], n)).astype(np.int64)
        frame = pd.DataFrame(
            {
                "user_id": np.char.add("u", ev_user.astype(str)),
                "item_id": np.char.add("i", item.astype(str)),
                "timestamp": ts.astype(np.int64),
            }
        )
        if self.cfg.scenes:
            frame["scene"] = np.char.add("s", sess_scene[session].astype(str))
        if not self.cfg.impressions:
            return frame
        # Shown but not clicked: other items of the clicked item's category, a second before the click.
        m = self.cfg.impressions
        shown_cat = np.repeat(cat, m)
        size_s = self.cat_size[shown_cat]
        rank_s = np.minimum(
            np.floor(size_s.astype(np.float64) ** rng.random(total * m)).astype(np.int64) - 1, size_s - 1
        )
        shown = pd.DataFrame(
            {
                "user_id": np.repeat(frame["user_id"].to_numpy(), m),
                "item_id": np.char.add("i", (self.cat_start[shown_cat] + rank_s).astype(str)),
                "timestamp": np.repeat(ts, m) - 1,
                "event": "impression",
            }
        )
        if self.cfg.scenes:
            shown["scene"] = np.repeat(frame["scene"].to_numpy(), m)
        frame["event"] = "click"
        return pd.concat([frame, shown], ignore_index=True)

    def chunks(self) -> Iterator[pd.DataFrame]:
        """Events of consecutive users, about _CHUNK_EVENTS at a time."""
        rng = np.random.default_rng(self.cfg.seed + 1)
        ends = np.cumsum(self.user_events)
        first = 0
        while first < self.cfg.users:
            last = int(np.searchsorted(ends, ends[first] - self.user_events[first] + _CHUNK_EVENTS, side="right"))
            last = max(last, first + 1)
            yield self.events(first, min(last, self.cfg.users), rng)
            first = last


def generate(cfg: SyntheticConfig) -> Dataset:
    """Generate the whole log in memory (for small runs such as the demo)."""
    world = _World(cfg)
    events = pd.concat(list(world.chunks()), ignore_index=True)
    events["user_id"] = events["user_id"].astype(str)
    events["item_id"] = events["item_id"].astype(str)
    return Dataset(
        events,
        world.users().set_index("user_id"),
        world.items().set_index("item_id"),
        source=f"synthetic (seed {cfg.seed}: {cfg.users:,} users, {world.n_items:,} items)",
    )


def write_parquet(cfg: SyntheticConfig, out_dir: Path) -> dict[str, Path]:
    """Write ``events.parquet``, ``users.parquet`` and ``items.parquet`` chunk by chunk."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = _World(cfg)
    paths = {name: out_dir / f"{name}.parquet" for name in ("events", "users", "items")}
    pq.write_table(pa.Table.from_pandas(world.items(), preserve_index=False), paths["items"])
    pq.write_table(pa.Table.from_pandas(world.users(), preserve_index=False), paths["users"])
    writer = None
    try:
        for chunk in world.chunks():
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            writer = writer or pq.ParquetWriter(paths["events"], table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return paths
