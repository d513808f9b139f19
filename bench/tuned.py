"""What a new user serves, by the procedure a new user follows: `init`, `tune` each channel, `tune
--channel served`, then `evaluate` on test.

    python bench/tuned.py LOG [LOG ...] [--channels two_tower ease itemcf item2vec] [--budget 1200]
                          [--trials 200] [--seeds 0 1 2] [--out bench/out/tuned]

For each log: the config `embrecall init` writes; each of ``--channels`` tuned on validation for
``--budget`` seconds (its study kept in ``OUT/<log>/tune/<channel>/``; a second run resumes it);
the tuned settings of every channel joined in one config; the served list chosen on validation
(`tune --channel served`); then every channel and `served` on test under BENCHMARK.md, over
``--seeds`` (mean ± half-range), beside `served (init)`: the list init wrote, untuned.  Test is
looked at only after every choice is made.  Prints one table per log (HR@10, NDCG@10, HR@100,
HR@500; the served lists' ratio to the best single channel) and how many trials each study ran
in its budget.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from seeded import cell  # bench/ is on sys.path when run as a script

from embrecall import evaluate, load_config
from embrecall.config import Config
from embrecall.pipeline import read_split
from embrecall.starter import starter_config
from embrecall.tune_all import tune_all

SHOWN = ["HR@10", "NDCG@10", "HR@100", "HR@500"]


def _seeded(cfg: Config, seed: int) -> Config:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})


def run(log: Path, out: Path, channels: list[str], budget: float, trials: int, seeds: list[int]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "init.toml").write_text(starter_config(log, out).toml)
    cfg = load_config(out / "init.toml", [f"out={out / 'runs'}", f"tune.timeout_s={budget}", f"tune.trials={trials}"])
    started = time.perf_counter()
    data, split = read_split(cfg, show_progress=False)
    served, studies = tune_all(cfg, data, split, out / "tune", channels, show_progress=True)
    studies["served"] = served
    chosen = load_config(served.config_path)
    tuning = (time.perf_counter() - started) / 60
    rows: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        for name, row in evaluate(_seeded(chosen, seed), show_progress=False).items():
            rows.setdefault(name, []).append(row)
        before = evaluate(_seeded(cfg, seed), ["served"], show_progress=False)["served"]
        rows.setdefault("served (init)", []).append(before)  # init's list, untuned: the baseline
    singles = {n: r for n, r in rows.items() if not n.startswith("served")}
    mean = {n: {m: sum(x[m] for x in r) / len(r) for m in SHOWN} for n, r in rows.items()}
    best = {m: max(mean[n][m] for n in singles) for m in SHOWN}
    merge = chosen.channels
    table = Table(
        title=f"{log.name}: init, {', '.join(channels) or 'no channel'} tuned ({budget:.0f} s each), served "
        f"chosen on validation: {merge.merge_mode} {dict(merge.serve)} offset {merge.rrf_offset} depth "
        f"{merge.merge_depth}; test, seeds {seeds} (mean ± half-range); tuning {tuning:.1f} min on "
        f"{os.cpu_count()} cores"
    )
    table.add_column("channel")
    for m in SHOWN:
        table.add_column(m, justify="right")
    for name, runs in rows.items():
        ratio = {m: f" ({mean[name][m] / best[m]:.2f}×)" if name.startswith("served") else "" for m in SHOWN}
        table.add_row(name, *[cell([r[m] for r in runs]) + ratio[m] for m in SHOWN])
    Console(width=220).print(table)
    for name, study in studies.items():
        Console().print(f"  tune {name}: {study.trials} trials ({study.pruned} pruned) in the budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, nargs="+")
    parser.add_argument("--channels", nargs="*", default=["two_tower", "ease", "itemcf", "item2vec"])
    parser.add_argument("--budget", type=float, default=1200.0, help="seconds of tuning per channel")
    parser.add_argument("--trials", type=int, default=200, help="trials per study at most")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/out/tuned"))
    args = parser.parse_args()
    for log in args.logs:
        run(log, args.out / log.stem, args.channels, args.budget, args.trials, args.seeds)


if __name__ == "__main__":
    main()
