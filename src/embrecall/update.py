"""One scheduled update (``embrecall update``): check the incoming log against the published
versions, train on from the active version, evaluate, and publish through the gate.

Safe to run every hour from cron or an orchestrator: a run with no event newer than the active
version does nothing ("nothing new"), two runs never overlap (the second one skips), a breach
leaves the active version serving, and every run that holds the lock is kept in the registry's
``UPDATES.json``.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embrecall.config import Config
from embrecall.errors import ConfigError, EmbrecallError, GateBreach, NothingNew
from embrecall.export import Bundle
from embrecall.export.gate import Gate
from embrecall.export.registry import Registry
from embrecall.pipeline import read_split, train
from embrecall.progress import note

__all__ = ["UpdateOutcome", "update"]

LOCK = ".update.lock"


@dataclass
class UpdateOutcome:
    outcome: str  # published, nothing new, busy (refused and failed runs raise, and are kept too)
    parent: str | None  # the version trained on from (None: the first version, trained from scratch)
    version: str | None = None  # the version published
    why: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def update(
    cfg: Config,
    registry: Path | str,
    gates: Sequence[Gate] = (),
    *,
    sigma: float = 3.0,
    window: int = 5,
    compare: Callable[[Bundle, Path], dict] | None = None,
    show_progress: bool = True,
) -> UpdateOutcome:
    """Check, train on from the active version (from scratch when there is none), publish.  Raises
    ``GateBreach`` (the CLI exits 3) when the log's volumes or the new version's figures are out
    of line; the active version then keeps serving."""
    reg = Registry(registry)
    reg.root.mkdir(parents=True, exist_ok=True)
    with (reg.root / LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            out = UpdateOutcome("busy", None, why=f"another update holds {reg.root / LOCK}; this run did nothing")
            note(out.why)
            return out
        return _locked(cfg, reg, gates, sigma, window, compare, show_progress)


def _locked(
    cfg: Config,
    reg: Registry,
    gates: Sequence[Gate],
    sigma: float,
    window: int,
    compare: Callable[[Bundle, Path], dict] | None,
    show_progress: bool,
) -> UpdateOutcome:
    started = time.perf_counter()
    active = reg.active()
    parent = active.name if active is not None else None
    record: dict[str, Any] = {"parent": parent}

    def keep(out: UpdateOutcome) -> UpdateOutcome:
        out.seconds = time.perf_counter() - started
        reg.record_update({**record, **{k: v for k, v in vars(out).items() if k != "metrics"}})
        return out

    try:
        if cfg.data.shards is None:  # a sharded log's volumes are not read into memory: not checked
            _, split = read_split(cfg, show_progress)
            record["volumes"] = reg.check_volumes(split.train_full, sigma=sigma, window=window)
        report = train(cfg, show_progress=show_progress, start_from=active)
        if report.bundle is None:
            raise ConfigError("embrecall update runs as one process, not under torchrun")
        version = reg.publish(report.bundle, gates, sigma=sigma, window=window, compare=compare)
    except NothingNew as err:
        return keep(UpdateOutcome("nothing new", parent, why=str(err)))
    except GateBreach as err:
        keep(UpdateOutcome("refused", parent, why=str(err)))
        raise
    except EmbrecallError as err:  # bad data or config: kept too, then said as any error is
        keep(UpdateOutcome("failed", parent, why=str(err)))
        raise
    trained = Bundle.manifest_of(reg.folder(version))["training"]
    record["trained"] = {k: trained[k] for k in ("seconds", "parent") if k in trained}
    return keep(UpdateOutcome("published", parent, version, metrics=report.metrics))
