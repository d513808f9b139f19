"""``embrecall tune``: choose a channel's settings with Optuna, on validation targets only.

Each trial applies suggested values to config fields (the same paths ``--set`` takes), fits the
channel on the train part and scores it on the validation targets (never on test); two-tower
trials run at most ``tune.max_epochs`` epochs and report every epoch's validation score, so
Hyperband stops the weak ones after a few (multi-fidelity).  The two-tower space holds the
model's shape (user-id feature, MLP, widths, history lengths and decays) beside the optimiser.  The study
lives in SQLite beside the output, so a stopped search resumes; the best settings come back as a
complete config file that ``train`` and ``evaluate`` take.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from embrecall.channel_table import CHANNELS, TWO_TOWER
from embrecall.config import (
    LOSS_SETTINGS,
    Config,
    HistoryFeature,
    SearchDim,
    TrainConfig,
    config_from_dict,
    get_field,
    set_field,
)
from embrecall.data.dataset import Dataset
from embrecall.data.log import MemoryLog
from embrecall.data.split import Split
from embrecall.errors import ConfigError, EmbrecallError
from embrecall.evaluation import evaluate_channel
from embrecall.pipeline import build_channel
from embrecall.progress import note
from embrecall.training.trainer import fit_two_tower, item_vectors, two_tower_channel

__all__ = ["DEFAULT_SPACES", "TuneResult", "open_study", "tune", "search_space"]


# What tunes each channel when the config declares no [tune.space] (the channel table's spaces):
# the settings that moved validation metrics most on the shared logs, over ranges wide enough
# for logs of other sizes.
DEFAULT_SPACES: dict[str, dict[str, SearchDim]] = {
    name: {path: SearchDim(**dim) for path, dim in kind.space.items()} for name, kind in CHANNELS.items() if kind.space
}


@dataclass
class TuneResult:
    best_value: float
    best_params: dict[str, Any]
    config_path: Path
    trials: int
    pruned: int
    figures: dict[str, float] = field(default_factory=dict)  # the best trial's validation figures


FULL_SOFTMAX_ITEMS = 10_000  # above this the default space leaves the full softmax out: on CiaoDVD's
# 15,616 items one epoch of it cost about ten of the in-batch softmax (bench/train_speed.py)


# Settings of the model's shape that are no single config field: name -> (set it, read it).
def _keep_user_id(raw: dict[str, Any], keep: bool) -> None:
    if not keep:
        raw["features"]["user"] = [f for f in raw["features"]["user"] if f.get("name") != "user_id"]


def _set_hidden(raw: dict[str, Any], value: str) -> None:
    set_field(raw, "model.hidden", [] if value == "none" else [int(w) for w in value.split("x")])


SHAPE: dict[str, tuple[Callable[[dict[str, Any], Any], None], Callable[[dict[str, Any]], Any]]] = {
    "features.user_id": (
        _keep_user_id,
        lambda raw: any(f.get("name") == "user_id" for f in get_field(raw, "features.user") or []),
    ),
    "model.hidden": (_set_hidden, lambda raw: "x".join(map(str, get_field(raw, "model.hidden") or [])) or "none"),
}


def _shape_space(cfg: Config) -> dict[str, SearchDim]:
    """The two-tower model's shape: the user-id feature or none, an MLP or none, the widths, each
    pooled history's length and decay, and one user vector or several interests."""
    space = {
        "model.hidden": SearchDim(choices=["none", "256"]),
        "model.output_dim": SearchDim(choices=[32, 64, 128]),
        "model.item_embedding_dim": SearchDim(choices=[32, 64, 128]),
    }
    if any(f.name == "user_id" for f in cfg.features.user):
        space["features.user_id"] = SearchDim(choices=[True, False])
    pooled = [f for f in cfg.features.user if isinstance(f, HistoryFeature) and f.max_len > 1]
    for f in pooled:
        space[f"features.user.{f.name}.max_len"] = SearchDim(low=5, high=200, int=True, log=True)
        space[f"features.user.{f.name}.decay"] = SearchDim(low=0.5, high=1.0)
    if pooled:
        space["model.interests"] = SearchDim(choices=[1, 2, 4])
    return space


def search_space(cfg: Config, catalog_items: int = 0) -> dict[str, SearchDim]:
    """The declared ``[tune.space]``, else the channel's default one (sized to the catalog; for the
    two-tower model, its shape too)."""
    if cfg.tune.space:
        return cfg.tune.space
    space = DEFAULT_SPACES.get(cfg.tune.channel)
    if not space:
        raise ConfigError(
            f"no search space for channel '{cfg.tune.channel}': declare one under [tune.space] "
            f"(channels with a default space: {sorted(DEFAULT_SPACES)})"
        )
    if catalog_items > FULL_SOFTMAX_ITEMS and "train.loss" in space:
        space = {k: v for k, v in space.items() if k != "train.loss"}
    if cfg.tune.channel == TWO_TOWER:
        space = {**_shape_space(cfg), **space}
    return space


def _suggest(trial: optuna.Trial, name: str, dim: SearchDim) -> Any:
    if dim.choices is not None:
        return trial.suggest_categorical(name, dim.choices)
    if dim.int:
        return trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)  # type: ignore[arg-type]
    return trial.suggest_float(name, dim.low, dim.high, log=dim.log)  # type: ignore[arg-type]


def with_params(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` (a config as plain data) with each ``path: value`` set, as ``--set`` would;
    where the loss is tuned, the settings the trial's loss does not read go back to their defaults."""
    out = copy.deepcopy(raw)
    for key, value in params.items():
        if key in SHAPE:
            SHAPE[key][0](out, value)
        else:
            set_field(out, key, value)
    if "train.loss" in params:
        for name, losses in LOSS_SETTINGS.items():
            if params["train.loss"] not in losses:
                default = TrainConfig.model_fields[name].get_default(call_default_factory=True)
                set_field(out, f"train.{name}", default.model_dump() if hasattr(default, "model_dump") else default)
    return out


def _current(raw: dict[str, Any], space: dict[str, SearchDim]) -> dict[str, Any]:
    """The config's own values of the tuned fields, where they lie in the space: the first trial."""
    out = {}
    for key, dim in space.items():
        value = SHAPE[key][1](raw) if key in SHAPE else get_field(raw, key)
        if dim.choices is not None:
            inside = value in dim.choices
        else:
            inside = isinstance(value, (int, float)) and dim.low is not None and dim.high is not None
            inside = inside and dim.low <= value <= dim.high
        if value is not None and inside:
            out[key] = value
    return out


def _score(cfg: Config, data: Dataset, split: Split, trial: optuna.Trial) -> float:
    """Fit ``cfg.tune.channel`` on train and return its validation metric."""
    view = split.validation_view()
    k = cfg.tune.metric.partition("@")[2]
    ks = [int(k)] if k.isdigit() else cfg.evaluate.ks
    if cfg.tune.channel != TWO_TOWER:
        channel = build_channel(cfg.tune.channel, cfg, data, view, show_progress=False)
        return evaluate_channel(channel, view, ks)[cfg.tune.metric]

    def report(epoch: int, score: float) -> None:
        trial.report(score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation HR@{cfg.train.early_stop_k} {score:.4f} at epoch {epoch}")

    fit = fit_two_tower(
        cfg,
        MemoryLog(split.train),
        data.users,
        data.items,
        epochs=min(cfg.train.epochs, cfg.tune.max_epochs),
        validation=split,
        show_progress=False,
        label=f"trial {trial.number}",
        exposures=data.exposures,
        on_epoch=report,
    )
    trial.set_user_attr("best_epoch", fit.best_epoch)
    vectors = item_vectors(fit.model, fit.catalog)
    channel = two_tower_channel(fit.model, fit.encoders, data.users, vectors)
    return evaluate_channel(channel, view, ks)[cfg.tune.metric]


def open_study(out: Path, name: str, seed: int, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """The study ``name`` in ``out/tune.sqlite``, created or resumed, maximising, sampled by TPE."""
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{(out / 'tune.sqlite').resolve()}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
    )


def tune(cfg: Config, data: Dataset, split: Split, out: Path, *, show_progress: bool = True) -> TuneResult:
    """Run (or resume) the study in ``out/tune.sqlite`` and write the best config to ``out/best.yaml``."""
    t = cfg.tune
    raw = cfg.model_dump(mode="json")
    if len(split.valid) == 0:
        raise ConfigError("tuning needs validation targets, and this split has none")
    space = search_space(cfg, split.train["item_id"].nunique())
    # Two-tower trials report every epoch: Hyperband stops the weak ones after 1, 3, 9... epochs,
    # so most of the budget goes to the configurations still in the running.
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=t.max_epochs, reduction_factor=3)
    study = open_study(out, f"{t.channel}-{t.metric}", t.seed, pruner)
    if not study.trials:
        study.enqueue_trial(_current(raw, space))  # the config as given is the first trial: the baseline

    def objective(trial: optuna.Trial) -> float:
        params = {name: _suggest(trial, name, dim) for name, dim in space.items()}
        trial_cfg = config_from_dict(with_params(raw, params), f"trial {trial.number}")
        value = _score(trial_cfg, data, split, trial)
        if not math.isfinite(value):
            raise optuna.TrialPruned("validation metric is not finite")
        return value

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not show_progress:
            return
        if trial.state == optuna.trial.TrialState.COMPLETE:
            outcome = f"validation {t.metric} {trial.value:.4f}"
        elif trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            epoch = max(trial.intermediate_values)
            outcome = f"pruned at epoch {epoch} (validation HR@k {trial.intermediate_values[epoch]:.4f})"
        else:
            outcome = trial.state.name.lower()
        done = [x.value for x in study.trials if x.state == optuna.trial.TrialState.COMPLETE and x.value is not None]
        best = f"{max(done):.4f}" if done else "none yet"
        note(f"trial {trial.number}: {outcome}; best {best}; {trial.params}")

    # A setting the data cannot support (say, item2vec with no session left) fails that trial, not the study.
    study.optimize(
        objective,
        n_trials=t.trials,
        timeout=t.timeout_s,
        callbacks=[progress],
        gc_after_trial=True,
        catch=(EmbrecallError,),
    )
    done = [x for x in study.trials if x.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ConfigError(f"no tuning trial completed within {t.timeout_s:.0f} s; raise tune.timeout_s")
    best = study.best_trial
    path = out / "best.yaml"
    path.write_text(
        f"# embrecall tune: best of {len(done)} trials, validation {t.metric} = {best.value:.4f}\n"
        f"# tuned: {best.params}\n" + yaml.safe_dump(with_params(raw, best.params), sort_keys=False)
    )
    pruned = sum(x.state == optuna.trial.TrialState.PRUNED for x in study.trials)
    return TuneResult(
        float(study.best_value), dict(best.params), path, len(study.trials), pruned, {t.metric: float(study.best_value)}
    )
