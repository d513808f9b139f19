"""User-tower inputs: the stored profile of every known user encoded once at load,
so that a request pays a dict lookup, its own real-time features and one tower run, not pandas
lookups over the user table (which cost milliseconds per request at scale)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from embrecall.features import Encoders

__all__ = ["UserProfiles"]

_UNKNOWN = "\x00unknown-user"  # a row no user table holds: every profile feature encodes as missing


class UserProfiles:
    def __init__(self, encoders: Encoders, users: pd.DataFrame | None):
        """``users``: the user table, indexed by user id (a bundle's has each user's ``items``,
        oldest first); None: no user table, every profile feature missing."""
        users = users if users is not None else pd.DataFrame(index=pd.Index([], dtype=object, name="user_id"))
        self.encoders = encoders
        encoders.item_lookup()  # built now, not in the first request
        self.row = {user: i for i, user in enumerate(users.index)}
        self.histories = users["items"].to_numpy() if "items" in users else np.empty(len(users), dtype=object)
        stored = [f for f in encoders.spec.user if encoders.is_profile(f)]
        self.live = [f for f in encoders.spec.user if not encoders.is_profile(f)]
        ids = pd.Index([*users.index, _UNKNOWN], dtype=object)
        empty = pd.DataFrame(index=range(len(ids)))
        self.stored = encoders.encode_users(ids, users, empty, None, features=stored)  # last row: unknown users
        self._reads_context = len(encoders.context_columns) > 1 or any(f.kind == "time" for f in self.live)
        self._no_ids, self._no_context = pd.Index([], dtype=object), pd.DataFrame()

    def __contains__(self, user_id: str) -> bool:
        return user_id in self.row

    def history(self, user_id: str) -> tuple[str, ...]:
        """The user's stored items, oldest first (empty for an unknown user)."""
        row = self.row.get(user_id)
        return () if row is None else tuple(self.histories[row])

    def inputs(
        self, user_ids: Sequence[str], histories: Sequence[Sequence[str]], contexts: Sequence[Mapping[str, object]]
    ) -> dict[str, np.ndarray]:
        """Tower inputs of several users, one row each: the stored profile, the history (oldest
        first) and the request's context (``timestamp`` defaults to now)."""
        rows = [self.row.get(user, len(self.row)) for user in user_ids]
        out = {name: values[rows] for name, values in self.stored.items()}
        matrix = self.encoders.history_matrix([list(h) for h in histories])
        if not self._reads_context:  # history only: no pandas on this path
            out.update(self.encoders.encode_users(self._no_ids, None, self._no_context, matrix, features=self.live))
            return out
        now = int(time.time())
        ctx = self.encoders.context_frame([{"timestamp": now, **context} for context in contexts])
        out.update(
            self.encoders.encode_users(pd.Index(list(user_ids), dtype=object), None, ctx, matrix, features=self.live)
        )
        return out
