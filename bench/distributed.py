"""One rank against two (torchrun, gloo on CPU) on the same data and seed: loss curves and speed.

    python bench/distributed.py [--events 120000] [--epochs 3]

Trains the synthetic log four ways with `embrecall train` (validation each epoch, no refit):
one process with batch 2B, two ranks with batch B each (`torchrun --standalone --nproc-per-node 2`),
one process with batch B, and (as root) two hosts with one rank and batch B each: network
namespaces joined by veth, a torchrun node in each, the c10d rendezvous on one's address
(`bench/hosts.py`).  Prints each epoch's training loss and validation HR@50, the examples (pairs)
per second over all ranks, and the wall time of the whole command.  Two ranks with B should match
one with 2B up to summation order, on one host or two; on a 2-core machine they share the cores,
so little speed-up is expected.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from hosts import (  # bench/ is on sys.path when run as a script
    Host,
    on_this_host,
    torchrun_across,
    two_hosts,
    why_no_hosts,
)
from rich.console import Console
from rich.table import Table

BATCH = 256


def _train(
    out: Path, ranks: int, batch: int, args: argparse.Namespace, hosts: tuple[Host, ...] = ()
) -> tuple[dict, float]:
    """``embrecall train`` on ``ranks`` ranks: one node on this host, or one node per host."""
    train = [
        "embrecall.cli",
        "train",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"train.batch_size={batch}",
        "--set",
        f"train.epochs={args.epochs}",
        "--set",
        f"train.patience={args.epochs}",
        "--set",
        "train.refit=false",
        "--set",
        f"data.synthetic.events={args.events}",
        "--set",
        f"data.synthetic.users={args.events // 30}",
        "--set",
        f"data.synthetic.items={args.events // 60}",
        "--set",
        "channels.serve={two_tower: 1.0}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // ranks)}
    started = time.perf_counter()
    if hosts:
        for node in torchrun_across(hosts, train, env):
            if node.returncode:
                raise RuntimeError(f"a torchrun node failed: {node.stderr[-3000:]}")
    else:
        subprocess.run([*on_this_host(ranks), "-m", *train], check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - started
    manifest = next(out.glob("*/manifest.json"))
    return json.loads(manifest.read_text())["training"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    ways = {
        f"1 rank, batch {2 * BATCH}": (1, 2 * BATCH),
        f"2 ranks, batch {BATCH} each": (2, BATCH),
        f"1 rank, batch {BATCH}": (1, BATCH),
    }
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (ranks, batch)) in enumerate(ways.items()):
            runs[name] = _train(Path(tmp) / str(i), ranks, batch, args)
        no_hosts = why_no_hosts()
        if no_hosts:
            print(f"no row for two hosts: {no_hosts}")
        else:
            with two_hosts() as hosts:
                name = f"2 hosts (netns), batch {BATCH} each"
                runs[name] = _train(Path(tmp) / "hosts", 2, BATCH, args, hosts)
                sent = sum(host.sent_bytes() for host in hosts)
            print(f"two hosts: {sent / 1e6:.1f} MB sent over their link")
    table = Table(title=f"synthetic log, {args.events:,} events: 1 rank vs 2 ranks vs 2 hosts (gloo, this machine)")
    table.add_column("epoch")
    for name in runs:
        table.add_column(f"{name}: loss / valid HR@50", justify="right")
    for e in range(args.epochs):
        table.add_row(
            str(e + 1), *(f"{r['log'][e]['loss']:.5f} / {r['log'][e]['HR@50']:.4f}" for r, _ in runs.values())
        )
    table.add_row(
        "pairs/s (all ranks)",
        *(f"{sum(x['pairs_per_s'] for x in r['log']) / len(r['log']):,.0f}" for r, _ in runs.values()),
    )
    table.add_row("command wall time (s)", *(f"{s:.1f}" for _, s in runs.values()))
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
