"""The sequence encoder on ml-100k: in memory on one process against sharded in 4 under torchrun
with 2 ranks, three seeds each (issue #26: its figures must agree within seed noise).

    python bench/sequence_shards.py [--seeds 0 1 2] [--epochs 20]

Both read the same table files (ml-100k's ratings, users and movies written to Parquet in a
temporary folder) with `configs/ml100k-sequence.toml`'s features and training settings, and the
same leave-last-out split.  The sharded run splits each user's windows from its own shard and,
with 2 ranks of batch B/2 each, trains on the global batch B of the single process.  Prints the
test HR@10, NDCG@10, HR@50 and HR@100 of every run, the mean and standard deviation over seeds,
and each setup's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from hosts import on_this_host  # bench/ is on sys.path when run as a script
from rich.console import Console
from rich.table import Table

from embrecall.data.movielens import read_movielens

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ml100k-sequence.toml"
ML100K = ROOT.parent / "shared" / "datasets" / "ml-100k"
METRICS = ["HR@10", "NDCG@10", "HR@50", "HR@100"]
BATCH = 1024


def write_tables(folder: Path) -> list[str]:
    """ml-100k as table files, and the settings that read them."""
    data = read_movielens(ML100K)
    data.events[["user_id", "item_id", "timestamp"]].to_parquet(folder / "events.parquet")
    data.users.reset_index().to_parquet(folder / "users.parquet")
    data.items.reset_index().to_parquet(folder / "items.parquet")
    return [
        "data.format=table",
        f"data.path={folder / 'events.parquet'}",
        f"data.users.path={folder / 'users.parquet'}",
        "data.users.key=user_id",
        f"data.items.path={folder / 'items.parquet'}",
        "data.items.key=item_id",
    ]


def train(out: Path, settings: list[str], ranks: int) -> tuple[dict, float]:
    """``embrecall train``: the two-tower's test figures and the command's wall seconds."""
    args = ["embrecall.cli", "train", "--config", str(CONFIG), "--out", str(out), "--no-progress"]
    for setting in settings:
        args += ["--set", setting]
    command = [*on_this_host(ranks), "-m", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // ranks))}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    manifest = json.loads(next(out.glob("*/manifest.json")).read_text())
    return {**manifest["metrics"]["two_tower"], "epochs": manifest["training"]["best_epoch"]}, (
        time.perf_counter() - started
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    runs: dict[str, list[tuple[int, dict, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        common = [*write_tables(folder), f"train.epochs={args.epochs}", "train.refit=false"]
        common += ["channels.serve={two_tower: 1.0}", "evaluate.ks=[10, 50, 100]"]
        setups = {
            f"in memory, 1 process, batch {BATCH}": (1, [f"train.batch_size={BATCH}"]),
            f"4 shards, 2 ranks, batch {BATCH // 2} each": (
                2,
                [f"train.batch_size={BATCH // 2}", "data.shards.count=4", f"data.shards.folder={folder / 'shards'}"],
            ),
        }
        for name, (ranks, own) in setups.items():
            for seed in args.seeds:
                out = folder / f"{ranks}-{seed}"
                metrics, seconds = train(out, [*common, *own, f"train.seed={seed}"], ranks)
                runs.setdefault(name, []).append((seed, metrics, seconds))
                print(name, seed, {k: round(metrics[k], 4) for k in METRICS}, f"{seconds:.0f} s", flush=True)
    table = Table(title="ml-100k, sequence encoder (configs/ml100k-sequence.toml, no refit): test figures")
    for column in ["setup", "seed", *METRICS, "best epoch", "wall s"]:
        table.add_column(column, justify="left" if column == "setup" else "right")
    for name, rows in runs.items():
        for seed, m, seconds in rows:
            table.add_row(name, str(seed), *(f"{m[k]:.4f}" for k in METRICS), str(m["epochs"]), f"{seconds:.0f}")
        means = [statistics.mean(m[k] for _, m, _ in rows) for k in METRICS]
        sds = [statistics.stdev(m[k] for _, m, _ in rows) if len(rows) > 1 else 0.0 for k in METRICS]
        table.add_row(name, "mean ± sd", *(f"{a:.4f} ± {s:.4f}" for a, s in zip(means, sds)), "", "")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
