"""Training on several processes with torch.distributed, as launched by ``torchrun``.

``torchrun --nproc-per-node N embrecall train ...`` (``--nnodes`` and a rendezvous address for
several machines) starts N copies of the same command; each is one rank of a process group
(NCCL when the ranks train on GPUs, gloo on CPU).  A log in memory: every rank reads it and
walks the same global order of examples; each global batch of ``N * train.batch_size`` rows is
cut into N equal slices, one per rank.  A sharded log (``data.shards``): each rank reads its own
shards, ``train.batch_size`` rows (or windows holding about as many targets) a step, all ranks
taking the same number of steps.  The model is wrapped in ``DistributedDataParallel``, which
averages gradients.  Each rank's users are scored against every rank's positives (and the shared
negatives every rank draws alike; ``training.step``), so N ranks train the objective of one rank
with batch ``N * B``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

__all__ = [
    "Ranks",
    "ranks",
    "join_from_env",
    "leave",
    "gather",
    "gather_rows",
    "my_share",
    "agree",
    "mean_over_ranks",
    "smallest",
    "barrier",
    "data_parallel",
    "average_sparse_gradients",
]


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The rank that validates, checkpoints, evaluates and writes the bundle."""
        return self.rank == 0


def ranks() -> Ranks:
    """This process's place in the process group (rank 0 of 1 outside one)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def join_from_env(device: torch.device) -> Ranks:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...); a
    plain run is rank 0 of 1.  NCCL when this rank trains on ``device`` a GPU, gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ranks()


def _own_device() -> torch.device:
    """Where a collective's own tensors live: NCCL moves GPU tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def leave() -> None:
    """Leave the process group (after training: evaluation and the bundle are rank 0's alone)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (the same shape on each) concatenated along dim 0, rank order;
    floating tensors keep their gradients, which flow back to the rank that made each part."""
    r = ranks()
    if r.world == 1:
        return tensor
    if tensor.is_floating_point() and tensor.requires_grad:
        return torch.cat(dist_fn.all_gather(tensor), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(r.world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_rows(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Every rank's 1-d ``values`` (each rank's own length) concatenated in rank order, and where
    this rank's begin in it."""
    r = ranks()
    if r.world == 1:
        return values, 0
    device = _own_device()
    mine = torch.from_numpy(np.ascontiguousarray(values)).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(r.world)]
    dist.all_gather(sizes, torch.tensor([len(values)], device=device))
    lengths = [int(n.item()) for n in sizes]
    padded = torch.cat([mine, mine.new_zeros(max(lengths) - len(values))])
    parts = [torch.empty_like(padded) for _ in range(r.world)]
    dist.all_gather(parts, padded)
    every = np.concatenate([part[:n].cpu().numpy() for part, n in zip(parts, lengths)])
    return every, sum(lengths[: r.rank])


def my_share(rows: np.ndarray, r: Ranks) -> np.ndarray:
    """This rank's slice of a global batch: equal slices in rank order; the few rows of a last,
    uneven batch that do not divide evenly are left out, since every rank must gather the same shape."""
    per = len(rows) // r.world
    return rows[r.rank * per : (r.rank + 1) * per]


def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a validation score, a decision to stop)."""
    if ranks().world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value: float) -> float:
    """The mean of a number over ranks (each rank's epoch loss: the global batch's)."""
    r = ranks()
    if r.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_own_device())
    dist.all_reduce(t)
    return float(t.item()) / r.world


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` for its dense parameters; tables with sparse
    gradients are left out of it (``average_sparse_gradients`` averages theirs): gloo's own
    sparse all-reduce, which DDP would run, crashed this trainer (SIGSEGV in the next collective
    after a thousand or so steps of two ranks on the 10M-event log)."""
    sparse = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Embedding) and m.sparse]
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, [f"{name}.weight" for name in sparse]
    )
    return torch.nn.parallel.DistributedDataParallel(model)


def average_sparse_gradients(model: torch.nn.Module) -> None:
    """Replace each sparse table's gradient by its mean over ranks, as DDP does for dense ones:
    every rank's (row, value) pairs gathered, padded to the longest, and summed."""
    world = ranks().world
    if world == 1:
        return
    tables = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse}
    for weight in tables.values():
        grad = (
            weight.grad.coalesce()
            if weight.grad is not None
            else torch.sparse_coo_tensor(
                weight.new_zeros((1, 0), dtype=torch.int64), weight.new_zeros((0, weight.shape[1])), weight.shape
            )
        )
        rows, values = grad.indices()[0], grad.values()
        longest = torch.tensor([len(rows)], device=rows.device)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        pad = int(longest.item()) - len(rows)  # padding adds zeros to row 0, the padding row
        rows = torch.cat([rows, rows.new_zeros(pad)])
        values = torch.cat([values, values.new_zeros((pad, values.shape[1]))])
        every_rows, every_values = (
            [torch.empty_like(rows) for _ in range(world)],
            [torch.empty_like(values) for _ in range(world)],
        )
        dist.all_gather(every_rows, rows)
        dist.all_gather(every_values, values)
        weight.grad = torch.sparse_coo_tensor(
            torch.cat(every_rows)[None], torch.cat(every_values) / world, weight.shape
        ).coalesce()


def smallest(value: int) -> int:
    """The least of a number over ranks (the steps every rank can take from its own shards)."""
    if ranks().world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_own_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def barrier() -> None:
    if ranks().world > 1:
        dist.barrier()
