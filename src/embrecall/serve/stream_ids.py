"""Redis Stream entry ids and field values as the item feed and the user-events stream read them."""

from __future__ import annotations

__all__ = ["as_text", "entry_order"]


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as (milliseconds, sequence), to compare ids."""
    ms, _, seq = as_text(entry_id).partition("-")
    return int(ms), int(seq or 0)
