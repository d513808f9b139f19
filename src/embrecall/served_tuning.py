"""``embrecall tune --channel served``: choose the served list on validation targets.

Every channel that can run on the log is fitted once on the train part (the two-tower choosing
its epochs on half of the validation users) and asked once for the other half's validation
lists, deep enough for any merge; then each trial only merges those lists (the
weights of ``channels.serve``, ``merge_mode``, ``rrf_offset``, ``merge_depth``) with the code the
service merges by, so a trial costs a merge, not a training.  A trial scores the mean of its
ratios to the best single channel over ``tune.served_metrics``, less five times every shortfall
below 1: a merge that gains at one cut-off is kept only when it loses at none.  Each channel
alone is tried first, so the served list chosen is never below the best single channel on
validation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml

from embrecall.channel_table import CHANNELS
from embrecall.config import Config, set_field
from embrecall.data.dataset import Dataset
from embrecall.data.log import MemoryLog
from embrecall.data.split import Split
from embrecall.errors import ConfigError
from embrecall.evaluation import build_queries, evaluate_channel
from embrecall.index.protocol import Filters
from embrecall.models.channel import Candidates, Channel, Timings, UserQuery
from embrecall.models.merge import Merged, MergeRule
from embrecall.pipeline import build_channel, channel_problems
from embrecall.progress import note, step
from embrecall.tune import TuneResult, open_study

__all__ = ["Recorded", "tune_served", "ServedChoice"]

MAX_USERS = 3_000  # validation users the merge is chosen on (a fixed sample on larger logs)
DEPTHS = (1, 2, 4)
SHORTFALL = (
    5.0  # what a ratio below the best single channel costs, per unit  # rrf: each channel gives its top depth * k
)


class Recorded:
    """A channel's lists asked once per user at one depth, then answered from memory (validation
    asks one query per user): what makes a merge trial cheap."""

    def __init__(self, channel: Channel, name: str):
        self.channel, self.name = channel, name
        self._lists: dict[str, Candidates] = {}

    def record(self, queries: Sequence[UserQuery], exclude: Sequence[set[str]], depth: int, batch: int = 1024) -> None:
        for start in range(0, len(queries), batch):
            part = queries[start : start + batch]
            found = self.channel.recommend(part, depth, exclude[start : start + batch])
            self._lists.update({q.user_id: c for q, c in zip(part, found)})

    def recommend(
        self,
        queries: Sequence[UserQuery],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        filters: Sequence[Filters] | None = None,
        timings: Timings | None = None,
    ) -> list[Candidates]:
        out = []
        for q in queries:
            c = self._lists[q.user_id]
            out.append(Candidates(c.item_ids[:k], c.scores[:k], c.channels[:k]))
        return out


class ServedChoice:
    """The study's objective: a trial's served list scored against the best single channel."""

    def __init__(self, channels: dict[str, Recorded], view: Split, metrics: list[str], fallback: str | None):
        self.channels, self.view, self.metrics, self.fallback = channels, view, metrics, fallback
        self.ks = sorted({int(m.partition("@")[2]) for m in metrics if "@" in m})
        self.single = {name: self.figures({name: 1.0}, MergeRule()) for name in channels}
        self.best = {m: max(max(row[m] for row in self.single.values()), 1e-12) for m in metrics}

    def figures(self, weights: dict[str, float], rule: MergeRule) -> dict[str, float]:
        fallback = self.channels[self.fallback] if self.fallback in self.channels else None
        merged = Merged(self.channels, weights, rule, fallback)
        found = evaluate_channel(merged, self.view, self.ks)
        return {m: float(found[m]) for m in self.metrics}

    def score(self, figures: dict[str, float]) -> float:
        ratios = [figures[m] / self.best[m] for m in self.metrics]
        return sum(ratios) / len(ratios) - SHORTFALL * sum(max(0.0, 1.0 - r) for r in ratios)


def _params(trial: optuna.trial.BaseTrial, names: list[str]) -> tuple[dict[str, float], MergeRule]:
    weights = {n: trial.suggest_float(f"channels.serve.{n}", 0.0, 1.0) for n in names}
    weights = {n: round(w, 3) if w >= 0.05 else 0.0 for n, w in weights.items()}  # below 0.05: off
    if not any(weights.values()):
        raise optuna.TrialPruned("no channel kept")
    mode = trial.suggest_categorical("channels.merge_mode", ["rrf", "quota"])
    offset = trial.suggest_float("channels.rrf_offset", 1.0, 300.0, log=True)
    depth = trial.suggest_categorical("channels.merge_depth", list(DEPTHS))
    return weights, MergeRule(mode, offset, depth)


def _halves(view: Split, seed: int) -> tuple[Split, Split]:
    """The validation view's users cut in two at random: the channels are fitted on the first
    half's targets (the two-tower chooses its epochs on them), the merge is chosen on the second
    half's, which no channel has looked at, so no channel's lists are flattered there."""
    users = pd.unique(view.test["user_id"])
    first = set(np.random.default_rng(seed).permutation(users)[: len(users) // 2])

    def part(mine: bool) -> Split:
        return replace(
            view,
            valid=view.valid[view.valid["user_id"].isin(first) == mine],
            test=view.test[view.test["user_id"].isin(first) == mine],
        )

    return part(True), part(False)


def tune_served(cfg: Config, data: Dataset, split: Split, out: Path, *, show_progress: bool = True) -> TuneResult:
    """Run (or resume) the merge study in ``out/tune.sqlite``; write the config with the chosen
    served list to ``out/best.yaml`` and the validation table to ``out/served.yaml``."""
    t = cfg.tune
    if len(split.valid) == 0:
        raise ConfigError("tuning needs validation targets, and this split has none")
    fit_on, view = _halves(split.sample_validation(2 * MAX_USERS, t.seed).validation_view(), t.seed)
    names = list(CHANNELS)
    skipped = channel_problems(cfg, names, MemoryLog(view.train_full), list(view.train_full.columns), data.items)
    for name, why in skipped.items():
        note(f"leaving {name} out of the served list: {why}")
    names = [n for n in names if n not in skipped]
    queries, exclude = build_queries(view.train_full, view.test)
    deepest = max(int(m.partition("@")[2]) for m in t.served_metrics if "@" in m) * max(DEPTHS)
    recorded: dict[str, Recorded] = {}
    built: dict[str, Channel] = {}
    for name in names:
        channel = build_channel(name, cfg, data, fit_on, built=built, show_progress=show_progress)
        built[name] = channel
        recorded[name] = Recorded(channel, name)
        with step(f"recording {name}'s validation lists ({deepest} deep)", show_progress):
            recorded[name].record(queries, exclude, deepest)
    fallback = cfg.channels.fallback if cfg.channels.fallback in recorded else None
    choice = ServedChoice(recorded, view, list(t.served_metrics), fallback)
    for name, row in choice.single.items():
        note(f"{name} alone: " + ", ".join(f"{m} {v:.4f}" for m, v in row.items()))

    study = open_study(out, f"served-{'+'.join(t.served_metrics)}-{'+'.join(names)}", t.seed)
    if not study.trials:  # each channel alone, then the config's own served list: the baselines
        base = {"channels.merge_mode": "rrf", "channels.rrf_offset": 60.0, "channels.merge_depth": 2}
        for name in names:
            study.enqueue_trial({**base, **{f"channels.serve.{n}": float(n == name) for n in names}})
        own = {
            f"channels.serve.{n}": min(cfg.channels.serve.get(n, 0.0) / max(cfg.channels.serve.values()), 1.0)
            for n in names
        }
        study.enqueue_trial(
            {
                **own,
                "channels.merge_mode": cfg.channels.merge_mode,
                "channels.rrf_offset": min(max(cfg.channels.rrf_offset, 1.0), 300.0),
                "channels.merge_depth": cfg.channels.merge_depth if cfg.channels.merge_depth in DEPTHS else 2,
            }
        )

    def objective(trial: optuna.Trial) -> float:
        weights, rule = _params(trial, names)
        figures = choice.figures(weights, rule)
        for m, v in figures.items():
            trial.set_user_attr(m, v)
        value = choice.score(figures)
        if not math.isfinite(value):
            raise optuna.TrialPruned("validation metric is not finite")
        return value

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if show_progress and trial.state == optuna.trial.TrialState.COMPLETE:
            figures = ", ".join(f"{m} {trial.user_attrs[m]:.4f}" for m in t.served_metrics)
            note(f"merge trial {trial.number}: {figures} (score {trial.value:.4f}; best {study.best_value:.4f})")

    study.optimize(objective, n_trials=t.trials, timeout=t.timeout_s, callbacks=[progress], gc_after_trial=True)
    best = study.best_trial
    weights, rule = _params(optuna.trial.FixedTrial(best.params), names)
    raw = copy.deepcopy(cfg.model_dump(mode="json"))
    set_field(raw, "channels.serve", {n: w for n, w in weights.items() if w > 0})
    set_field(raw, "channels.merge_mode", rule.mode)
    set_field(raw, "channels.rrf_offset", round(rule.offset, 2))
    set_field(raw, "channels.merge_depth", rule.depth)
    served = {m: best.user_attrs[m] for m in t.served_metrics}
    table = {**choice.single, "served": served}
    (out / "served.yaml").write_text(yaml.safe_dump({"validation": table}, sort_keys=False))
    path = out / "best.yaml"
    done = sum(x.state == optuna.trial.TrialState.COMPLETE for x in study.trials)
    path.write_text(
        f"# embrecall tune --channel served: best of {done} merges on validation "
        f"({', '.join(f'{m} {v:.4f}' for m, v in served.items())})\n" + yaml.safe_dump(raw, sort_keys=False)
    )
    pruned = sum(x.state == optuna.trial.TrialState.PRUNED for x in study.trials)
    return TuneResult(float(best.value or 0.0), dict(best.params), path, len(study.trials), pruned, served)
