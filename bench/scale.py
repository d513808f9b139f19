"""A log larger than memory, stage by stage: synthetic logs of 10M and 100M events (1M items,
2M users) generated once to Parquet, read into user shards, trained on 1 and 2 ranks.

    python bench/scale.py [--events 10000000 100000000] [--data /tmp/embrecall-scale]
                          [--steps 0 2000] [--ranks 1 2] [--shards 16 64] [--shard-ranks 1 2]

For each size: the log is generated (kept in ``--data`` for the next run), then read into
shards as training reads them (pass 1: rank 0 partitions by user; pass 2: each of
``--shard-ranks`` ranks splits its own shards, rank 0 sums them up), then, for each
rank count, ``embrecall.training`` runs in fresh processes (``torchrun --nproc-per-node N``
for N > 1): encode (encoders, catalog inputs), one epoch (``--steps`` 0: the whole epoch; else
that many steps), item vectors and the index (rank 0).  Each process prints its wall time per
stage and its peak RSS after each stage (a peak so far, the figure that bounds a machine).
Data: synthetic (Zipf popularity inside categories, sessions); a speed and memory figure, not a
quality one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hosts import on_this_host  # bench/ is on sys.path when run as a script
from rich.console import Console
from rich.table import Table

CONFIG = """
out = "{out}"
[data]
format = "table"
# The generator's heaviest users log a session a day for years past the rest of the log (the
# span check refuses such rows at 100M events): the unit stated, the times are taken as they are.
timestamp_format = "unix_s"
path = "{data}/events.parquet"
users = {{ path = "{data}/users.parquet", key = "user_id" }}
items = {{ path = "{data}/items.parquet", key = "item_id", title = "title" }}
[data.shards]
count = {shards}
[train]
batch_size = 1024
epochs = 1
{steps}
[index]
kind = "ivf_sq8"
"""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _shard(config: str) -> None:
    """Child (one process, or each rank of a torchrun): read the log into shards as training does;
    print each pass's seconds and this process's peak RSS."""
    import torch

    from embrecall.config import load_config
    from embrecall.data.shards import prepare_shards, shard_folder
    from embrecall.training.distributed import agree, barrier, join_from_env, leave

    cfg = load_config(config)
    if (shard_folder(cfg) / "shards.json").is_file():  # an earlier run wrote them: nothing measured now
        print(json.dumps({"stage": "shards"}))
        return
    r = join_from_env(torch.device("cpu"))
    shards = prepare_shards(cfg, r.rank, r.world, agree, barrier)
    leave()
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest split worker
    if r.main:
        print(
            json.dumps({"stage": "shards", **shards.meta["seconds"], "peak_mb": _peak_mb(), "workers_mb": workers_mb})
        )


def _train(config: str) -> None:
    """Child (one rank): encode, one epoch, item vectors, index; one JSON line per stage."""
    import pandas as pd
    import torch

    from embrecall.config import load_config
    from embrecall.data.load import numeric_columns
    from embrecall.data.shards import Shards, shard_folder
    from embrecall.data.table import read_feature_tables
    from embrecall.features import Encoders
    from embrecall.index import FaissIndex
    from embrecall.training.distributed import barrier, join_from_env
    from embrecall.training.examples import Catalog
    from embrecall.training.trainer import fit_two_tower, item_vectors

    r = join_from_env()
    cfg = load_config(config)
    rows = []

    def stage(name: str, started: float, **extra: float) -> None:
        rows.append(
            {"stage": name, "rank": r.rank, "seconds": time.perf_counter() - started, "peak_mb": _peak_mb(), **extra}
        )

    started = time.perf_counter()
    log = Shards.open(shard_folder(cfg)).log("train_full")
    users, items = read_feature_tables(cfg.data, numeric_columns(cfg), [])
    counts = log.item_counts()
    encoders = Encoders(cfg.features).fit_ids(counts.index, log.user_ids(), pd.DataFrame(), users, items)
    Catalog(encoders, items, counts.to_numpy())
    stage("encode", started)
    started = time.perf_counter()
    fit = fit_two_tower(cfg, log, users, items, epochs=1, show_progress=r.main)
    entry = fit.log[-1]
    stage("train", started, pairs_per_s=entry["pairs_per_s"])
    barrier()
    if r.main:
        with torch.no_grad():
            started = time.perf_counter()
            vectors = item_vectors(fit.model, fit.catalog)
            stage("item vectors", started)
            started = time.perf_counter()
            FaissIndex.build(vectors, cfg.index)
            stage("index", started)
    for row in rows:
        print(json.dumps(row), flush=True)


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[10_000_000, 100_000_000])
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[0, 2000], help="per size: training steps (0: one whole epoch)"
    )
    parser.add_argument("--shards", type=int, nargs="+", default=[16, 64], help="per size: shard count")
    parser.add_argument("--ranks", type=int, nargs="*", default=[1, 2], help="none: the read and split only")
    parser.add_argument("--shard-ranks", type=int, nargs="+", default=[1], help="ranks that split the shards")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/embrecall-scale"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"shard": _shard, "train": _train}[args.child[0]](args.child[1])
        return
    table = Table(
        title=f"scale: {args.items:,} items, {args.users:,} users, batch 1024 per rank, model.sparse_ids "
        f"unset (sparse above 1M table rows); {os.cpu_count()} cores"
    )
    for col in ("events", "ranks", "stage", "wall s", "peak RSS MB (max over ranks)", "notes"):
        table.add_column(col, justify="right")
    for events, steps, shards in zip(args.events, args.steps, args.shards):
        folder = args.data / f"e{events}"
        if not (folder / "events.parquet").is_file():
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "embrecall.cli",
                    "generate",
                    "--out",
                    str(folder),
                    "--events",
                    str(events),
                    "--items",
                    str(args.items),
                    "--users",
                    str(args.users),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            print(f"generated {events:,} events in {time.perf_counter() - started:.0f} s", flush=True)
        config = folder / "scale.toml"
        config.write_text(
            CONFIG.format(
                out=folder / "runs", data=folder, shards=shards, steps=f"steps_per_epoch = {steps}" if steps else ""
            )
        )
        label = f"{events:,}"
        for n in args.shard_ranks:
            if len(args.shard_ranks) > 1:  # each rank count measured from the raw log
                shutil.rmtree(folder / "runs" / "shards", ignore_errors=True)
            child = [*on_this_host(n), __file__, "--child", "shard", str(config)]
            done = _lines(subprocess.run(child, check=True, capture_output=True, text=True).stdout)[0]
            if "partition" not in done:
                table.add_row(
                    label, "", "read, split", "", "", f"shards an earlier run wrote: delete {folder / 'runs'}"
                )
                continue
            table.add_row(label, "1", "read (partition by user)", f"{done['partition']:.0f}", "", f"{shards} shards")
            table.add_row(
                label,
                str(n),
                "split (per shard)",
                f"{done['split']:.0f}",
                f"{done['peak_mb']:,.0f}",
                (
                    f"in worker processes (the largest of rank 0's peaked at {done['workers_mb']:,.0f} MB)"
                    if done["workers_mb"]
                    else "each rank in its own process"
                )
                + "; the summary by DuckDB",
            )
        for n in args.ranks:
            train = [*on_this_host(n), __file__, "--child", "train", str(config)]
            proc = subprocess.run(train, capture_output=True, text=True)
            if proc.returncode:
                (folder / f"failed-{n}-ranks.log").write_text(proc.stdout + proc.stderr)
                table.add_row(
                    label, str(n), "failed", "", "", f"exit {proc.returncode}, see {folder}/failed-{n}-ranks.log"
                )
            rows = _lines(proc.stdout)
            for name in ("encode", "train", "item vectors", "index"):
                mine = [row for row in rows if row["stage"] == name]
                if not mine:
                    continue
                note = ""
                if name == "train":
                    note = (
                        f"{'whole epoch' if not steps else f'{steps:,} steps'}, "
                        f"{mine[0]['pairs_per_s']:,.0f} pairs/s (all ranks)"
                    )
                table.add_row(
                    label,
                    str(n),
                    name,
                    f"{max(r['seconds'] for r in mine):.0f}",
                    f"{max(r['peak_mb'] for r in mine):,.0f}",
                    note,
                )
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
