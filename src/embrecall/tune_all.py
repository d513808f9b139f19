"""``embrecall tune --channel all``: every channel tuned in turn, then the served list chosen.

What a new user wants from one command: each channel that can run on the log gets its own study
on validation (``tune.timeout_s`` each), its best settings are carried into one config, and the
served list is chosen over the tuned channels (``served_tuning``).  Each study resumes where a
previous run left it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embrecall.channel_table import CHANNELS, TWO_TOWER
from embrecall.config import Config, config_from_dict, get_field, load_config, set_field
from embrecall.data.dataset import Dataset
from embrecall.data.log import MemoryLog
from embrecall.data.split import Split
from embrecall.pipeline import channel_problems
from embrecall.progress import note
from embrecall.served_tuning import tune_served
from embrecall.tune import DEFAULT_SPACES, TuneResult, tune

__all__ = ["tune_all", "TOWER_SECTIONS"]

TOWER_SECTIONS = ("features", "model", "train")  # what a two-tower study may change


def carry(raw: dict[str, Any], channel: str, best: Config) -> None:
    """Set in ``raw`` the settings a study of ``channel`` tunes, as its best config has them."""
    tuned = best.model_dump(mode="json")
    sections = TOWER_SECTIONS if channel == TWO_TOWER else (f"channels.{CHANNELS[channel].section}",)
    for section in sections:
        set_field(raw, section, get_field(tuned, section))


def tune_all(
    cfg: Config,
    data: Dataset,
    split: Split,
    out: Path,
    channels: list[str] | None = None,
    *,
    show_progress: bool = True,
) -> tuple[TuneResult, dict[str, TuneResult]]:
    """Each of ``channels`` (default: every channel with a search space) that can run on the log,
    tuned in ``out/<channel>/``; then the served list over every channel in ``out/served/``.
    Returns the served study's result (its config holds every tuned setting) and each channel's."""
    view = split.validation_view()
    names = [n for n in (channels if channels is not None else DEFAULT_SPACES) if n in CHANNELS]
    problems = channel_problems(cfg, names, MemoryLog(view.train_full), list(view.train_full.columns), data.items)
    raw = cfg.model_dump(mode="json")
    studies: dict[str, TuneResult] = {}
    for name in names:
        if name in problems:
            note(f"not tuning {name}: {problems[name]}")
            continue
        one = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"channel": name, "space": {}})})
        studies[name] = tune(one, data, split, out / name, show_progress=show_progress)
        carry(raw, name, load_config(studies[name].config_path))
        note(f"{name} tuned: {studies[name].trials} trials ({studies[name].pruned} pruned)")
    joined = config_from_dict(raw, "every channel tuned")
    return tune_served(joined, data, split, out / "served", show_progress=show_progress), studies
