"""Table cells for figures measured over several seeds: mean ± half-range (one run: the value)."""

from __future__ import annotations

import statistics

__all__ = ["cell"]


def cell(values: list[float], fmt: str = "{:.4f}") -> str:
    spread = f" ± {fmt.format((max(values) - min(values)) / 2)}" if len(values) > 1 else ""
    return fmt.format(statistics.fmean(values)) + spread
