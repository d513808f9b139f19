"""Training on two gloo ranks: the in-batch softmax sees every rank's candidates, and two ranks
with batch B train what one rank with batch 2B trains (`torchrun ... embrecall train`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embrecall.config import load_config
from embrecall.data.load import numeric_columns
from embrecall.data.shards import prepare_shards, shard_folder
from embrecall.data.table import read_feature_tables
from embrecall.features import Encoders
from embrecall.pipeline import read_training_data
from embrecall.training.distributed import (
    average_sparse_gradients,
    gather,
    my_share,
    ranks,
)
from embrecall.training.losses import sampled_softmax_loss
from embrecall.training.trainer import fit_two_tower
from embrecall.training.warm_start import Parent
from tests.conftest import sharded_config

B, D = 4, 8


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A global batch of 2B users and their positives (two share an item: an accidental hit)."""
    g = torch.Generator().manual_seed(0)
    users = torch.randn(2 * B, D, generator=g)
    items = torch.randn(2 * B, D, generator=g)
    idx = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    return users, items, idx, torch.log(torch.linspace(0.1, 0.8, 2 * B))


def _loss(users, items, idx, log_q, offset=0):
    return sampled_softmax_loss(users, items, idx, log_q, 0.1, True, 0.0, offset=offset)


def _rank(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank, world_size=2)
    users, items, idx, log_q = _batch()
    mine = slice(rank * B, (rank + 1) * B)
    u = users[mine].clone().requires_grad_()
    i = items[mine].clone().requires_grad_()
    gathered = gather(i)
    assert gathered.shape == (2 * B, D)  # this rank's softmax has all 2B candidates
    loss = _loss(u, gathered, gather(idx[mine]), gather(log_q[mine]), offset=rank * B)
    loss.backward()
    grads = torch.cat([u.grad, i.grad], dim=1) / 2  # what DDP's averaging of the two ranks' gradients gives
    torch.manual_seed(0)
    table = torch.nn.Embedding(10, 3, sparse=True)
    (table(torch.tensor(SPARSE_ROWS[rank])) * (rank + 1)).sum().backward()
    average_sparse_gradients(table)
    torch.save(
        {
            "loss": loss.detach(),
            "grads": grads,
            "share": my_share(torch.arange(11).numpy(), ranks()),
            "sparse": table.weight.grad.to_dense(),
        },
        f"{folder}/rank{rank}.pt",
    )
    dist.destroy_process_group()


SPARSE_ROWS = ([1, 2, 2], [2, 7, 9])  # the ranks touch different rows, one shared, not as often


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """What each of two gloo ranks computed (one spawn for the tests below)."""
    folder = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank, args=(str(folder),), nprocs=2)
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_each_rank_scores_its_users_against_every_ranks_items(two_ranks):
    got = two_ranks
    users, items, idx, log_q = _batch()
    u, i = users.clone().requires_grad_(), items.clone().requires_grad_()
    whole = _loss(u, i, idx, log_q)  # one rank, batch 2B
    whole.backward()
    torch.testing.assert_close((got[0]["loss"] + got[1]["loss"]) / 2, whole.detach())
    # rank r's users' gradients, and its items' gradients summed over both ranks' losses, as one rank
    for r in range(2):
        mine = slice(r * B, (r + 1) * B)
        expected = torch.cat([u.grad[mine], i.grad[mine]], dim=1)
        torch.testing.assert_close(got[r]["grads"], expected, rtol=1e-5, atol=1e-6)
    assert got[0]["share"].tolist() == [0, 1, 2, 3, 4] and got[1]["share"].tolist() == [5, 6, 7, 8, 9]


SHARDED = ["train.batch_size=128", "model.sparse_ids=true"]


def _fit_on_two_ranks(rank: int, folder: str, epochs: int, resume: bool, name: str) -> None:
    """Each rank trains on its own shards of a sharded log, with sparse id tables (SparseAdam)."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/group-{name}", rank=rank, world_size=2)
    cfg = load_config(Path(folder) / "config.yaml", [f"train.resume={str(resume).lower()}"])
    log = prepare_shards(cfg).log("train")
    users, items = read_feature_tables(cfg.data, numeric_columns(cfg), [])
    fit = fit_two_tower(
        cfg, log, users, items, epochs=epochs, checkpoint_dir=Path(folder) / f"ckpt-{name}", show_progress=False
    )
    kept = {"steps": fit.steps, "state": fit.model.state_dict(), "log": fit.log, "sparse": fit.model.sparse}
    torch.save(kept, f"{folder}/{name}-{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_on_their_own_shards_resume_from_rank_0s_checkpoint(tmp_path):
    torch.set_num_threads(1)
    cfg = sharded_config(tmp_path, *SHARDED)
    prepare_shards(cfg)  # before the ranks start: they open what is there
    (tmp_path / "config.yaml").write_text(cfg.model_dump_json())  # JSON is YAML
    mp.spawn(_fit_on_two_ranks, args=(str(tmp_path), 2, False, "straight"), nprocs=2)
    mp.spawn(_fit_on_two_ranks, args=(str(tmp_path), 1, False, "resumed"), nprocs=2)  # stopped after epoch 1
    mp.spawn(_fit_on_two_ranks, args=(str(tmp_path), 2, True, "resumed"), nprocs=2)
    straight, resumed = (torch.load(tmp_path / f"{n}-0.pt", weights_only=False) for n in ("straight", "resumed"))
    assert [e["epoch"] for e in resumed["log"]] == [1, 2] and resumed["sparse"]
    assert any((tmp_path / "ckpt-resumed").iterdir())  # rank 0's epoch checkpoints, read back by both ranks
    for (name, a), b in zip(straight["state"].items(), resumed["state"].values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resuming on two ranks")


def _update_on_two_ranks(rank: int, folder: str) -> None:
    """Each rank trains on from the same parent over the new events (and replay) of its own shards."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/group-update", rank=rank, world_size=2)
    cfg = load_config(Path(folder) / "config.yaml")
    log = prepare_shards(cfg).log("train_full")
    users, items = read_feature_tables(cfg.data, numeric_columns(cfg), [])
    saved = torch.load(f"{folder}/parent.pt", weights_only=False)
    encoders = Encoders.from_json(cfg.features, saved["encoders"])
    parent = Parent("p", cfg, encoders, saved["state"], saved["optimizer"], saved["until"])
    fit = fit_two_tower(cfg, log, users, items, epochs=1, show_progress=False, parent=parent)
    torch.save({"steps": fit.steps, "state": fit.model.state_dict()}, f"{folder}/update-{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_train_on_from_a_version_over_their_own_shards(tmp_path):
    torch.set_num_threads(1)
    cfg = sharded_config(tmp_path, *SHARDED, "update.replay=0.5")
    log = prepare_shards(cfg).log("train_full")
    users, items = read_feature_tables(cfg.data, numeric_columns(cfg), [])
    fit = fit_two_tower(cfg, log, users, items, epochs=1, show_progress=False)  # the parent, on one process
    times = np.concatenate([part["timestamp"].to_numpy() for part in log.parts(["timestamp"])])
    assert fit.optimizer is not None
    parent = {
        "encoders": fit.encoders.to_json(),
        "state": fit.model.state_dict(),
        "optimizer": fit.optimizer.state_dict(),
        "until": int(np.quantile(times, 0.7)),
    }
    torch.save(parent, tmp_path / "parent.pt")
    (tmp_path / "config.yaml").write_text(cfg.model_dump_json())
    mp.spawn(_update_on_two_ranks, args=(str(tmp_path),), nprocs=2)
    first, second = (torch.load(tmp_path / f"update-{r}.pt", weights_only=False) for r in (0, 1))
    assert first["steps"] == second["steps"] > 0  # every rank takes as many steps of its own shards' new events
    for (name, a), b in zip(first["state"].items(), second["state"].values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs between the ranks after the update")


TINY = [
    "--set",
    "data.synthetic.users=300",
    "--set",
    "data.synthetic.items=200",
    "--set",
    "data.synthetic.events=6000",
    "--set",
    "train.epochs=2",
    "--set",
    "train.patience=2",
    "--set",
    "train.negatives.global_count=64",
    "--no-progress",
]


def _train(tmp: Path, nproc: int, batch: int) -> dict:
    out = tmp / f"{nproc}-ranks"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "embrecall.cli",
        "train",
        "--out",
        str(out),
        "--set",
        f"train.batch_size={batch}",
        *TINY,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bundles = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
    assert len(bundles) == 1  # rank 0 alone writes it
    return json.loads((bundles[0] / "manifest.json").read_text())


def test_two_ranks_with_batch_b_train_what_one_rank_with_batch_2b_trains(tmp_path):
    """With popular negatives beside every rank's positives: every rank draws the batch's shared
    ones alike.  (The in-batch softmax alone: ``test_each_rank_scores_...`` above.)"""
    one = _train(tmp_path, 1, 256)
    two = _train(tmp_path, 2, 128)
    for a, b in zip(one["training"]["log"], two["training"]["log"]):
        assert a["epoch"] == b["epoch"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)  # the same objective, summed in another order
        if "HR@50" in a:
            assert b["HR@50"] == pytest.approx(a["HR@50"], abs=0.02)
    assert len(one["training"]["log"]) == len(two["training"]["log"])
    assert two["metrics"]["two_tower"]["HR@10"] == pytest.approx(one["metrics"]["two_tower"]["HR@10"], abs=0.03)


def _shard_on_two_ranks(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/group-shards", rank=rank, world_size=2)
    read_training_data(load_config(Path(folder) / "config.yaml"), show_progress=False)
    dist.destroy_process_group()


def test_two_ranks_split_their_own_shards_into_what_one_process_writes(tmp_path):
    """Rank 0 reads the log into shards; each rank then splits its own; rank 0 sums them up."""
    one = sharded_config(tmp_path, f"data.shards.folder={tmp_path / 'one'}", count=5)
    two = one.model_copy(
        update={
            "data": one.data.model_copy(
                update={"shards": one.data.shards.model_copy(update={"folder": tmp_path / "two"})}
            )
        }
    )
    prepare_shards(one)
    (tmp_path / "config.yaml").write_text(two.model_dump_json())
    mp.spawn(_shard_on_two_ranks, args=(str(tmp_path),), nprocs=2)
    a, b = shard_folder(one), shard_folder(two)
    files = sorted(f.name for f in a.glob("*.parquet"))
    assert len(files) == 2 * 5 + 2 and files == sorted(f.name for f in b.glob("*.parquet"))
    for name in files:
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name), obj=name)
    meta_a, meta_b = (json.loads((f / "shards.json").read_text()) for f in (a, b))
    assert {k: v for k, v in meta_a.items() if k != "seconds"} == {k: v for k, v in meta_b.items() if k != "seconds"}


SEQUENCE = "features.user=[{kind: categorical, name: user_id}, {kind: sequence, name: recent, max_len: 8}]"
MIXED = ["train.negatives.global_count=32", "train.negatives.hard_count=2", "train.negatives.hard_column=category"]


def test_sequence_windows_and_mixed_negatives_train_on_two_ranks_over_their_own_shards(tmp_path):
    """Each rank walks the windows of its own shards; the softmax scores every rank's positives,
    the shared popular negatives and its rows' own same-category ones; the ranks stay in step."""
    torch.set_num_threads(1)
    cfg = sharded_config(tmp_path, *SHARDED, SEQUENCE, *MIXED, count=4)
    prepare_shards(cfg)
    (tmp_path / "config.yaml").write_text(cfg.model_dump_json())
    mp.spawn(_fit_on_two_ranks, args=(str(tmp_path), 2, False, "windows"), nprocs=2)
    first, second = (torch.load(tmp_path / f"windows-{r}.pt", weights_only=False) for r in (0, 1))
    assert first["steps"] == second["steps"] > 0
    losses = [e["loss"] for e in first["log"]]
    assert all(np.isfinite(losses)) and losses[1] < losses[0]
    for (name, a), b in zip(first["state"].items(), second["state"].values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs between the ranks")


def test_sparse_table_gradients_are_averaged_over_ranks_as_ddp_averages_dense_ones(two_ranks):
    expected = torch.zeros(10, 3)
    for rank, rows in enumerate(SPARSE_ROWS):
        for row in rows:
            expected[row] += (rank + 1) / 2
    for got in two_ranks:
        torch.testing.assert_close(got["sparse"], expected)
