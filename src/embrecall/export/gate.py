"""What ``embrecall publish`` checks before a version goes live.

* Fixed thresholds: ``--gate "HR@10>=0.15"`` (``Gate``).
* The 3σ rule (DeWu's anomaly blocking): the candidate against the last ``window`` published
  versions.  A ranking metric (HR@K, NDCG@K, MRR, AUC, AUC_shown of any channel) more than ``sigma`` standard
  deviations below their mean, or a data volume (events, users, items per day; the share of
  items new since the active version) more than ``sigma`` off their mean either way, is a
  breach.  With fewer than ``MIN_HISTORY`` earlier versions the rule has nothing to stand on and
  says so.  A spread below ``MIN_SPREAD`` of the mean counts as that much, so that versions
  trained on identical data do not make every later difference infinitely many σ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from embrecall.errors import ConfigError

__all__ = ["Gate", "parse_gate", "flat_metrics", "sigma_breaches", "MIN_HISTORY", "MIN_SPREAD"]

MIN_HISTORY = 3  # earlier published versions needed for a mean and a spread
MIN_SPREAD = 0.01  # of the mean: the smallest standard deviation the rule uses
_GATE = re.compile(r"^\s*(?:(\w+)\.)?([\w@]+)\s*(>=|<=|>|<)\s*([0-9.eE+-]+)\s*$")
_RANKING = re.compile(r"^(HR|NDCG)@\d+$|^MRR$|^AUC(_shown)?$")
VOLUMES = ("events_per_day", "users_per_day", "items_per_day", "new_item_share")


@dataclass(frozen=True)
class Gate:
    """``channel.metric op value``, e.g. ``two_tower.HR@10 >= 0.15`` (channel defaults to two_tower)."""

    channel: str
    metric: str
    op: str
    value: float

    def check(self, metrics: dict) -> str | None:
        """None when passed, else why not."""
        got = metrics.get(self.channel, {}).get(self.metric)
        if got is None:
            return f"{self.channel}.{self.metric} is not in the bundle's metrics"
        ok = {">=": got >= self.value, "<=": got <= self.value, ">": got > self.value, "<": got < self.value}[self.op]
        return None if ok else f"{self.channel}.{self.metric} = {got:.4f}, gate needs {self.op} {self.value}"


def parse_gate(text: str) -> Gate:
    m = _GATE.match(text)
    if not m:
        raise ConfigError(f"gate {text!r} is not of the form [channel.]metric >= value, e.g. 'HR@10>=0.15'")
    return Gate(m.group(1) or "two_tower", m.group(2), m.group(3), float(m.group(4)))


def flat_metrics(metrics: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """The ranking metrics of every channel as ``channel.metric`` -> value."""
    return {
        f"{channel}.{name}": float(v)
        for channel, values in metrics.items()
        for name, v in values.items()
        if _RANKING.match(name) and isinstance(v, (int, float))
    }


def sigma_breaches(candidate: Mapping[str, float], earlier: Sequence[Mapping[str, float]], sigma: float) -> list[str]:
    """Why the candidate's figures (flat metrics and volumes) are out of line with the earlier
    versions', one line per breach; ranking metrics breach only downwards, volumes both ways."""
    out = []
    for name, value in candidate.items():
        past = np.asarray([e[name] for e in earlier if isinstance(e.get(name), (int, float))], dtype=np.float64)
        if len(past) < MIN_HISTORY:
            continue
        mean = float(past.mean())
        spread = max(float(past.std(ddof=1)), MIN_SPREAD * abs(mean), 1e-12)
        z = (value - mean) / spread
        if z < -sigma or (name in VOLUMES and z > sigma):
            side = "below" if z < 0 else "above"
            out.append(
                f"{name} = {value:.4g} is {abs(z):.1f}σ {side} the mean {mean:.4g} of the last {len(past)} "
                f"published versions (σ {spread:.3g})"
            )
    return out
