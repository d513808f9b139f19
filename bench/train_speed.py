"""Two-tower training speed: the trainer's pairs/s beside a floor, per config and thread setting.

    python bench/train_speed.py [--steps 60]

For each config, one epoch of the real trainer (batch assembly, history gathering, optimiser and
all) is timed, and beside it, in the same process, a *floor*: a bare PyTorch loop of the same
towers and loss over tensors built in memory beforehand.  The ratio says how much of the time is
not arithmetic.  Rows with "busy" run while another process keeps one core busy; "auto" is the
default thread count (``train.threads`` unset).  Configs: ml-100k (pooled histories, and the
sequence encoder) and CiaoDVD (15,616 items: in-batch against full softmax) from ../shared, and
a synthetic log of 100k items with 50-long histories.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from embrecall import evaluate
from embrecall.config import Config, config_from_dict, load_config, set_field
from embrecall.data.load import load_dataset
from embrecall.data.log import MemoryLog
from embrecall.data.split import split_dataset
from embrecall.features import Encoders
from embrecall.models.two_tower import TwoTower
from embrecall.training.distributed import Ranks
from embrecall.training.examples import Examples
from embrecall.training.losses import sampled_softmax_loss, softmax_loss
from embrecall.training.sources import InMemory
from embrecall.training.threads import training_threads
from embrecall.training.trainer import fit_two_tower

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "datasets" / "ml-100k"
CIAODVD = ROOT.parent / "shared" / "datasets" / "ciaodvd"


@contextlib.contextmanager
def busy_core(on: bool) -> Iterator[None]:
    """Another process spinning on one core while the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        time.sleep(0.5 if on else 0)
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def floor(cfg: Config, ex: Examples, enc: Encoders, steps: int) -> float:
    """Pairs/s of forward, loss, backward and Adam over pre-built tensors (no batch assembly)."""
    t = cfg.train
    torch.manual_seed(0)
    model = TwoTower(cfg.features, enc, cfg.model).train()
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    windowed = ex.sequence is not None
    batches = []
    _, walk = InMemory(ex, windowed).epoch(np.random.default_rng(0), t.batch_size, Ranks())
    for _, step in itertools.islice(walk, steps):
        if windowed:
            inputs, at, rows = ex.window_batch(step)
        else:
            inputs, at, rows = ex.user_batch(step), None, step
        pos = ex.item_idx[rows]
        if t.loss == "full_softmax":
            cand, labels, log_q = ex.catalog.item_inputs, torch.from_numpy(pos), torch.zeros(enc.n_items)
        elif windowed:
            distinct, labels = np.unique(pos, return_inverse=True)
            cand, labels = ex.catalog.item_batch(distinct), torch.from_numpy(labels)
            log_q = ex.log_inclusion(distinct, len(rows))
        else:
            cand, labels, log_q = (
                ex.catalog.item_batch(pos),
                torch.from_numpy(pos),
                ex.catalog.log_q[torch.from_numpy(pos)],
            )
        batches.append((inputs, at, cand, labels, log_q, len(rows)))
    started, pairs = time.perf_counter(), 0
    for inputs, at, cand, labels, log_q, n in batches:
        user, items = model.user(inputs, at), model.item(cand)
        if t.loss == "full_softmax" or windowed:
            loss = softmax_loss(user, items, labels, log_q, t.temperature)
        else:
            loss = sampled_softmax_loss(user, items, labels, log_q, t.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pairs += n
    return pairs / (time.perf_counter() - started)


def measure(name: str, cfg: Config, threads: int | None, busy: bool, steps: int) -> list[str]:
    data = load_dataset(cfg)
    events = split_dataset(data, cfg.split).train_full
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": threads})})
    with busy_core(busy):
        n = training_threads(threads)  # what the trainer will pick, decided under the same load
        fit = fit_two_tower(cfg, MemoryLog(events), data.users, data.items, epochs=1, show_progress=False)
        trainer = fit.log[0]["pairs_per_s"]
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        ex = Examples(events, fit.encoders, data.users, data.items)
        bare = floor(cfg, ex, fit.encoders, steps)
        torch.set_num_threads(before)
    return [
        name,
        "auto" if threads is None else str(threads),
        str(n),
        "yes" if busy else "no",
        f"{trainer:,.0f}",
        f"{bare:,.0f}",
        f"{trainer / bare:.0%}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="floor steps per row")
    args = parser.parse_args()
    runs: list[tuple[str, Config, int | None, bool]] = []
    if (ML100K / "u.data").is_file():
        pooled = load_config(ROOT / "configs" / "ml100k.toml")
        sequence = load_config(ROOT / "configs" / "ml100k-sequence.toml")
        runs += [
            ("ml-100k", pooled, 1, False),
            ("ml-100k", pooled, None, False),
            ("ml-100k", pooled, None, True),
            ("ml-100k", pooled, 2, True),
            ("ml-100k sequence", sequence, 1, False),
            ("ml-100k sequence", sequence, None, False),
            ("ml-100k sequence", sequence, None, True),
            ("ml-100k sequence", sequence, 2, True),
        ]
    else:
        Console().print(f"[yellow]MovieLens 100K not found at {ML100K}: synthetic rows only[/]")
    if (CIAODVD / "movie-ratings.txt").is_file():  # the cost of a full softmax over 15,616 items
        for loss in ("sampled_softmax", "full_softmax"):
            cfg = load_config(ROOT / "configs" / "ciaodvd.toml", [f"train.loss={loss}"])
            runs.append((f"ciaodvd {loss}", cfg, 1, False))
    raw = load_config(
        None, ["data.synthetic.users=4000", "data.synthetic.items=100000", "data.synthetic.events=200000"]
    ).model_dump(mode="json")
    set_field(raw, "features.user.3.max_len", 50)  # the default config's pooled history, 50 long
    synthetic = config_from_dict(raw, "synthetic")
    runs += [
        ("synthetic 100k items, 50-long histories", synthetic, 1, False),
        ("synthetic 100k items, 50-long histories", synthetic, None, False),
    ]
    table = Table(title="two-tower training speed (trained (user, next item) pairs per second)")
    for col in (
        "config",
        "train.threads",
        "threads used",
        "other process busy",
        "trainer pairs/s",
        "floor pairs/s",
        "trainer / floor",
    ):
        table.add_column(col, justify="right")
    for name, cfg, threads, busy in runs:
        table.add_row(*measure(name, cfg, threads, busy, args.steps))
        Console().print(f"done: {name}, threads {threads}, busy {busy}")
    Console(width=160).print(table)
    if (ML100K / "u.data").is_file():  # the whole protocol: epochs chosen on validation, then the refit
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(ROOT / "configs" / "ml100k.toml", [f"out={tmp}"])
            row = evaluate(cfg, ["two_tower"], show_progress=False)["two_tower"]
        Console().print(
            f"ml-100k protocol (epoch choice on validation + refit on train + validation), default "
            f"threads: {row['train_seconds']:.1f} s; test HR@10 {row['HR@10']:.4f}"
        )


if __name__ == "__main__":
    main()
