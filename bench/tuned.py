"""Every channel tuned on validation, then measured on test: the procedure a user follows on a new log.

    python bench/tuned.py --config configs/ml100k.toml [--channels two_tower ease itemcf item2vec]
                          [--budget 1800] [--trials 40] [--seeds 0 1 2] [--out bench/out/tuned-ml100k]

For each channel, ``embrecall tune`` runs on the validation targets (its study kept in
``OUT/tune-<channel>/``: a second run resumes it and only tops it up to ``--trials``), then the
best config is evaluated on test under BENCHMARK.md: the two-tower model over ``--seeds``
(mean ± half-range), the others once (they do not depend on the training seed).  ``merged``
combines the tuned two-tower model and the tuned ItemCF as the config's ``channels.merge`` says;
``popular`` is the floor; the merged row reuses each seed's two-tower model.  Test is looked at
only after every choice is made.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import optuna
import yaml
from rich.console import Console
from rich.table import Table
from seeded import cell  # bench/ is on sys.path when run as a script

from embrecall import evaluate, load_config
from embrecall.config import Config, config_from_dict, get_field, set_field
from embrecall.pipeline import read_split
from embrecall.tune import search_space, tune

SHOWN = ["HR@10", "NDCG@10", "HR@20", "NDCG@20", "HR@100", "MRR", "coverage@100", "long_tail@100", "train_seconds"]


def tuned_config(cfg: Config, channel: str, out: Path, trials: int, budget: float) -> tuple[Config, float]:
    """The channel's best config on validation (tuning first where the study has fewer than ``trials``)."""
    folder = out / f"tune-{channel}"
    cfg = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"channel": channel, "timeout_s": budget})})
    storage = f"sqlite:///{(folder / 'tune.sqlite').resolve()}"
    study = (
        optuna.load_study(study_name=f"{channel}-{cfg.tune.metric}", storage=storage)
        if (folder / "tune.sqlite").is_file()
        else None
    )
    done = 0 if study is None else sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if study is None or done < trials or not (folder / "best.yaml").is_file():
        cfg = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"trials": max(1, trials - done)})})
        data, split = read_split(cfg, show_progress=False)
        result = tune(cfg, data, split, folder, show_progress=True)
        return load_config(result.config_path), result.best_value
    return load_config(folder / "best.yaml"), study.best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--channels", nargs="+", default=["two_tower", "ease", "itemcf", "item2vec"])
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds of tuning per channel")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    base = load_config(args.config)
    out = args.out or Path("bench/out") / f"tuned-{args.config.stem}"
    best: dict[str, Config] = {}
    valid: dict[str, float] = {}
    for channel in args.channels:
        best[channel], valid[channel] = tuned_config(base, channel, out, args.trials, args.budget)
        Console().print(f"{channel}: validation {base.tune.metric} {valid[channel]:.4f}")
    rows: dict[str, list[dict[str, float]]] = {}
    raw = best.get("two_tower", base).model_dump(mode="json")
    set_field(raw, "out", str(out / "runs"))
    if "itemcf" in best:  # merged: the tuned two-tower model with the tuned ItemCF
        set_field(raw, "channels.itemcf", best["itemcf"].channels.itemcf.model_dump(mode="json"))
    seeded = ["two_tower"] if "two_tower" in best else []
    seeded += ["merged"] if {"two_tower", "itemcf"} <= set(best) else []
    for seed in args.seeds if seeded else []:
        set_field(raw, "train.seed", seed)
        for name, row in evaluate(config_from_dict(raw, "tuned"), seeded, show_progress=False).items():
            rows.setdefault(name, []).append(row)  # merged reuses the two-tower model just trained
    for channel, cfg in best.items():
        if channel != "two_tower":
            run = cfg.model_copy(update={"out": out / "runs"})
            rows[channel] = [evaluate(run, [channel], show_progress=False)[channel]]
    rows["popular"] = [evaluate(base, ["popular"], show_progress=False)["popular"]]
    first = rows["popular"][0]
    table = Table(
        title=f"{args.config.name}: tuned on validation ({base.tune.metric}, {args.budget:.0f} s or "
        f"{args.trials} trials per channel), then test (BENCHMARK.md), {os.cpu_count()} cores; "
        f"two_tower and merged: mean ± half-range over seeds {args.seeds}"
    )
    table.add_column("channel")
    table.add_column(f"valid {base.tune.metric}", justify="right")
    for m in SHOWN:
        table.add_column(m.replace("_seconds", " s"), justify="right")
    for name, runs in rows.items():
        cells = [cell([r[m] for r in runs], "{:.1f}" if m == "train_seconds" else "{:.4f}") for m in SHOWN]
        table.add_row(name, f"{valid[name]:.4f}" if name in valid else "", *cells)
    Console(width=240).print(table)
    Console().print(
        f"test: {first['targets']:,.0f} users, catalog {first['catalog_items']:,.0f} items, "
        f"HR ceiling {first['hit_ceiling']:.4f}"
    )
    for channel, cfg in best.items():
        tuned = {
            k: get_field(cfg.model_dump(mode="json"), k)
            for k in search_space(cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"channel": channel})}))
        }
        Console(width=240).print(
            f"{channel} settings: {yaml.safe_dump(tuned, default_flow_style=True, width=1000).strip()}"
        )


if __name__ == "__main__":
    main()
