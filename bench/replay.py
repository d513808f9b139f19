"""Continuous updates replayed on a timestamped log: full retrains against warm updates.

    python bench/replay.py --log ml100k [--steps 30] [--tail 0.3]

Fits the two-tower model on the log before the replay (the epoch count chosen on validation, as
`embrecall train` chooses it), then steps through `--steps` equal periods of time spanning the
log's last `--tail` of events.  At each step two versions are made from the events so far: (a) a full
retrain from random weights for that epoch count, (b) a warm update (`train --from`) of the
previous warm version on the period's events and replayed older ones (the config's `[update]`).
Each is measured on the next period's events: for every user active then, the first item they
click there that they had not clicked before is the target (full ranking over the catalog, their
own items excluded; BENCHMARK.md's metrics), and the top-100 of those users is compared with the
previous version's of the same chain (overlap).  Prints one row per step and the sums; `--json`
writes them.  Logs: ml100k, ciaodvd, taobao (the shared head slice).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from embrecall import load_config
from embrecall.config import Config
from embrecall.data.load import load_dataset
from embrecall.data.log import MemoryLog
from embrecall.data.split import Split, split_dataset
from embrecall.evaluation import evaluate_channel
from embrecall.models.channel import UserQuery, user_histories
from embrecall.models.tower_channel import TowerChannel
from embrecall.training.trainer import FitResult, fit_two_tower, item_vectors, two_tower_channel
from embrecall.training.warm_start import Parent

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ml100k": "ml100k.toml", "ciaodvd": "ciaodvd.toml", "taobao": "taobao.toml"}
TOP = 100


def next_period(events: pd.DataFrame, start: int, end: int) -> Split:
    """The split of one step: everything up to ``start`` as history, and as targets each user's
    first event in (start, end] on an item the user had not clicked before."""
    seen = events[events["timestamp"] <= start]
    after = events[(events["timestamp"] > start) & (events["timestamp"] <= end)].sort_values(["user_id", "timestamp"])
    known = pd.MultiIndex.from_frame(seen[["user_id", "item_id"]])
    fresh = after[~pd.MultiIndex.from_frame(after[["user_id", "item_id"]]).isin(known)]
    targets = fresh.groupby("user_id", sort=False).head(1)
    return Split(train=seen, valid=seen.iloc[:0], train_full=seen, test=targets)


def channel_of(fit: FitResult, users: pd.DataFrame | None, items: pd.DataFrame | None) -> TowerChannel:
    return two_tower_channel(fit.model, fit.encoders, users, item_vectors(fit.model, fit.catalog), items=items)


def top_lists(channel: TowerChannel, split: Split) -> list[list[str]]:
    """The top-100 of the step's target users (their histories so far excluded)."""
    histories = user_histories(split.train_full[split.train_full["user_id"].isin(split.test["user_id"])])
    queries = [UserQuery(str(u), tuple(histories.get(u, ())), {"timestamp": 0}) for u in split.test["user_id"]]
    return [c.item_ids for c in channel.recommend(queries, TOP, [set(q.history) for q in queries])]


def overlap(a: list[list[str]] | None, b: list[list[str]]) -> float:
    """Mean share of the same users' top-100 two versions have in common."""
    if a is None:
        return float("nan")
    return float(np.mean([len(set(x) & set(y)) / TOP for x, y in zip(a, b)]))


def parent_of(cfg: Config, fit: FitResult, until: int, name: str) -> Parent:
    """A fit kept in memory as the next warm update's parent (what a bundle would hold)."""
    assert fit.optimizer is not None
    return Parent(
        name,
        cfg,
        fit.encoders,
        {k: v.clone() for k, v in fit.model.state_dict().items()},
        fit.optimizer.state_dict(),
        until,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", choices=sorted(CONFIGS), default="ml100k")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tail", type=float, default=0.3, help="share of the log's events the replay covers")
    parser.add_argument("--last-step", type=int, help="stop after this step (settings chosen on the first steps)")
    parser.add_argument("--set", action="append", default=[], help="config overrides, as for the CLI")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console(width=170)
    cfg = load_config(ROOT / "configs" / CONFIGS[args.log], args.set)
    data = load_dataset(cfg)
    events = data.events
    times = events["timestamp"].to_numpy()
    first, last = int(np.quantile(times, 1 - args.tail)), int(times.max())  # quantiles: outlying times aside
    cuts = np.linspace(first, last, args.steps + 2).astype(np.int64)
    start = events[events["timestamp"] <= cuts[0]]
    base = split_dataset(replace(data, events=start), cfg.split)  # the log before the replay
    chosen = fit_two_tower(
        cfg,
        MemoryLog(base.train),
        data.users,
        data.items,
        epochs=cfg.train.epochs,
        validation=base,
        show_progress=False,
    )
    epochs = chosen.best_epoch
    console.print(
        f"{args.log}: {len(events):,} events; replay of {args.steps} steps of {(cuts[1] - cuts[0]) / 3600:.1f} h "
        f"from {len(start):,} events; full retrains run {epochs} epochs (chosen on validation); "
        f"update: {cfg.update.epochs} epoch(s), replay {cfg.update.replay:g}×, "
        f"{torch.get_num_threads()} threads"
    )
    warm = fit_two_tower(cfg, MemoryLog(start), data.users, data.items, epochs=epochs, show_progress=False)
    parent = parent_of(cfg, warm, int(cuts[0]), "step-0")
    rows, before = [], {"full": None, "warm": None}
    for step in range(1, min(args.steps, args.last_step or args.steps) + 1):
        split = next_period(events, int(cuts[step]), int(cuts[step + 1]))
        so_far = MemoryLog(split.train_full)
        row: dict[str, float] = {"step": step, "users": len(split.test), "new_events": len(so_far) - len(start)}
        for chain in ("full", "warm"):
            began = time.perf_counter()
            if chain == "full":
                fit = fit_two_tower(cfg, so_far, data.users, data.items, epochs=epochs, show_progress=False)
            else:
                label = f"step-{step}"
                fit = fit_two_tower(
                    cfg, so_far, data.users, data.items, epochs=cfg.update.epochs, show_progress=False, parent=parent
                )
                parent = parent_of(cfg, fit, int(cuts[step]), label)
            row[f"{chain}_s"] = time.perf_counter() - began
            channel = channel_of(fit, data.users, data.items)
            m = evaluate_channel(channel, split, [10, TOP])
            row[f"{chain}_HR@100"], row[f"{chain}_NDCG@10"] = m[f"HR@{TOP}"], m["NDCG@10"]
            lists = top_lists(channel, split)
            previous = before[chain]
            row[f"{chain}_overlap"] = overlap(None if previous is None else top_lists(previous, split), lists)
            before[chain] = channel
        start = split.train_full
        rows.append(row)
        console.print(
            f"step {step}: users {row['users']}, HR@100 full {row['full_HR@100']:.4f} warm {row['warm_HR@100']:.4f}, "
            f"s full {row['full_s']:.1f} warm {row['warm_s']:.1f}"
        )
    frame = pd.DataFrame(rows)
    table = Table(
        title=f"replay on {args.log}: next-period figures, training seconds, top-{TOP} overlap with the last version"
    )
    columns = ["step", "users", "full_HR@100", "warm_HR@100", "full_NDCG@10", "warm_NDCG@10"]
    columns += ["full_s", "warm_s", "full_overlap", "warm_overlap"]
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            *(
                f"{r[c]:.1f}" if c.endswith("_s") else f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c])
                for c in columns
            )
        )
    console.print(table)
    weights = frame["users"]
    summary = {
        chain: {
            "HR@100": float(np.average(frame[f"{chain}_HR@100"], weights=weights)),
            "NDCG@10": float(np.average(frame[f"{chain}_NDCG@10"], weights=weights)),
            "seconds": float(frame[f"{chain}_s"].sum()),
            "overlap": float(frame[f"{chain}_overlap"].mean()),
            "HR@100_trend_per_step": float(np.polyfit(frame["step"], frame[f"{chain}_HR@100"], 1)[0]),
        }
        for chain in ("full", "warm")
    }
    gap = frame["warm_HR@100"] - frame["full_HR@100"]  # a warm chain drifting away shows as a falling gap
    summary["gap"] = {"HR@100_trend_per_step": float(np.polyfit(frame["step"], gap, 1)[0])}
    ratio = summary["warm"]["HR@100"] / max(summary["full"]["HR@100"], 1e-12)
    time_share = summary["warm"]["seconds"] / max(summary["full"]["seconds"], 1e-12)
    console.print(
        f"over {len(rows)} steps ({int(weights.sum()):,} targets): HR@100 full {summary['full']['HR@100']:.4f}, "
        f"warm {summary['warm']['HR@100']:.4f} ({ratio - 1:+.1%}); NDCG@10 full {summary['full']['NDCG@10']:.4f}, "
        f"warm {summary['warm']['NDCG@10']:.4f}; training time warm/full {time_share:.1%} "
        f"({summary['warm']['seconds']:.0f} s / {summary['full']['seconds']:.0f} s); top-100 overlap of consecutive "
        f"versions full {summary['full']['overlap']:.3f}, warm {summary['warm']['overlap']:.3f}; HR@100 trend per step "
        f"full {summary['full']['HR@100_trend_per_step']:+.4f}, warm {summary['warm']['HR@100_trend_per_step']:+.4f}, "
        f"warm - full {summary['gap']['HR@100_trend_per_step']:+.4f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"log": args.log, "epochs": epochs, "rows": rows, "summary": summary}, indent=1)
        )


if __name__ == "__main__":
    main()
