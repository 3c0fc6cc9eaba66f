"""Data-parallel training over torch.distributed: `torchrun --nproc_per_node N run.py ...`.

Shape legend: B queries in the global batch, b = B / R per rank, R ranks, D embedding width,
P positives and N hard negatives gathered from every rank.

What each rank does in a step (mltp.step):
- embeds its contiguous shard of the seed-determined global batch (`shard`): rank r takes rows
  r*b .. (r+1)*b - 1, so the ranks' shards in rank order are the batch in its own order;
- gathers every rank's positives and hard negatives WITH their gradients (`gather_rows`), in rank
  order, and their text keys the same way (`gather_keys`): the candidates are all B positives then
  all N negatives, in the order one process would list them, so false-negative masking sees the
  same keys in the same columns;
- scores its own b queries against every candidate; the positive of its query i sits in column
  r*b + i (`info_nce(..., first=r*b)`).

Why the gradients come out equal to one process's: the loss of the global batch is the mean of the
ranks' local means (equal shards). `gather_rows`' backward sums, over ranks, the gradient each
rank's loss sends to a gathered row, and hands every rank the sum for its own rows: each rank's
backward thus carries every rank's loss into its own parameters. `average_gradients` then takes
the mean over ranks, as DDP's reducer does.

Why not the DDP module wrapper: its reducer hooks one forward to one backward, while a contrastive
step runs several forwards (queries, positives, negatives; GradCache's mini-batches) before its
backward. One all_reduce over the flattened gradients after the step's last backward is what the
reducer computes, in one bucket.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import torch
import torch.distributed as dist


class World(NamedTuple):
    rank: int
    size: int

    @property
    def main(self) -> bool:  # the rank that writes checkpoints, logs and results, and evaluates
        return self.rank == 0


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World(0, 1)


def launched_ranks() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: str) -> str:
    # torchrun numbers the processes of one machine by LOCAL_RANK: one GPU each.
    if device.startswith("cuda") and launched_ranks() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def start(device: str) -> World:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs); one process: no-op."""
    if launched_ranks() > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return world()


def stop() -> None:
    """Leave the group `start` joined (a group the caller made is the caller's to end)."""
    if launched_ranks() > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence, w: World | None = None) -> list:
    w = w or world()
    if len(items) % w.size:
        raise ValueError(f"a batch of {len(items)} does not split evenly over {w.size} ranks")
    b = len(items) // w.size
    return list(items[w.rank * b:(w.rank + 1) * b])


def _sizes(n: int, device) -> list[int]:
    local = torch.tensor([n], device=device)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    # all_gather wants one shape on every rank: pad each rank's rows to the longest, then cut.
    padded = x.new_zeros(max(sizes), *x.shape[1:])  # (max n_r, ...)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])  # (sum n_r, ...), rank order


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # (n_r, D) -> (sum n_r, D)
        ctx.rows = sum(sizes[: dist.get_rank()]), x.shape[0]
        return _gather_padded(x.contiguous(), sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank's loss sent gradient to every gathered row: sum over ranks, keep own rows.
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start, n = ctx.rows
        return grad[start:start + n], None  # (n_r, D)


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's rows of x in rank order, differentiable, and where this rank's rows start.

    Ranks may hold different numbers of rows (a shard's rows without a hard negative)."""
    if world().size == 1:
        return x, 0
    sizes = _sizes(x.shape[0], x.device)
    start = sum(sizes[: dist.get_rank()])
    if max(sizes) == 0:  # nothing anywhere: no collective on empty tensors
        return x, start
    return _GatherRows.apply(x, sizes), start


def gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """Every rank's integer keys (n_r,) in rank order: (sum n_r,)."""
    if world().size == 1:
        return keys
    sizes = _sizes(keys.shape[0], keys.device)
    return _gather_padded(keys, sizes) if max(sizes) else keys


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """A copy of `values` summed over ranks (one all_reduce)."""
    values = values.detach().clone()
    if world().size > 1:
        dist.all_reduce(values)
    return values


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """The mean over ranks of every parameter's gradient, in one all_reduce (DDP's reducer)."""
    w = world()
    if w.size == 1:
        return
    # A parameter no forward reached has no gradient here but may have one on another rank; one
    # that has none on any rank stays None, so AdamW skips it as it would in one process.
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    reached = torch.tensor([float(p.grad is not None) for p in params], device=grads[0].device)
    flat = torch.cat([*grads, reached])  # (sum numel + number of params,)
    dist.all_reduce(flat)
    *means, reached = flat.split([p.numel() for p in params] + [len(params)])
    for p, g, r in zip(params, means, reached.tolist()):
        p.grad = (g / w.size).view_as(p).clone() if r > 0 else None


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Rank 0's values on every rank (as DDP does when it wraps a model), so all start alike."""
    if world().size == 1:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def barrier() -> None:
    if world().size > 1:
        dist.barrier()
