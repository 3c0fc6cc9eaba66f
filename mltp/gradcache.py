"""GradCache: a contrastive batch of any size in the memory of one mini-batch.

Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup" (RepL4NLP
2021; luyug/GradCache). InfoNCE couples every query to every candidate, so splitting a batch into
micro-batches (`--grad-accum`) shrinks each query's set of negatives. GradCache keeps the batch
whole and splits only the graph:

1. embed every mini-batch without a graph (no activations kept) -> the batch's embeddings;
2. the loss over all of them, and its gradient with respect to each embedding (the "cache");
3. embed each mini-batch again, with its graph, and back-propagate its cached gradient through it.

The parameter gradients are those of the whole batch at once: by the chain rule dL/dθ = Σ_e
dL/de · de/dθ, and step 3 adds one mini-batch's terms at a time. Activations live for one
mini-batch, so memory grows with the mini-batch and not the batch (bench/gradcache_memory.py);
the price is a second forward of every mini-batch.

Step 3 replays the random number generator's state from step 1 for each mini-batch, so dropout
(LoRA's) draws the same masks on both passes: otherwise the gradient of step 3 would belong to
other embeddings than the loss of step 2.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from .embedder import Embedder
from .step import BatchTexts, batch_loss, batch_mean, embed, forwards, tokenize

Chunk = Callable[[], torch.Tensor]  # one mini-batch's forward: () -> (n, D)


def gradcache_step(embedder: Embedder, texts: BatchTexts, cfg) -> tuple[torch.Tensor, int]:
    """`mltp.step.contrastive_step` with each forward cut into mini-batches of at most cfg.mini_batch
    texts: the same loss and gradients, one mini-batch's activations alive at a time."""
    groups = tokenize(embedder, texts, cfg.max_length)
    size = cfg.mini_batch
    chunks = [partial(embed, embedder, rows[i:i + size]) for rows in forwards(groups, cfg.joint_forward)
              for i in range(0, len(rows), size)]
    losses = []

    def loss_fn(outputs: list[torch.Tensor]) -> torch.Tensor:
        loss = batch_loss(torch.cat(outputs), groups, texts, cfg)
        losses.append(loss.detach())
        return loss / cfg.grad_accum

    cached_backward(chunks, loss_fn, next(embedder.model.parameters()).device)
    return batch_mean(losses[0], groups)


def rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_rng_state(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def plain_backward(chunks: list[Chunk], loss_fn: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
    """What `cached_backward` computes, with every chunk's graph alive until the one backward
    (the reference it is tested and measured against)."""
    loss = loss_fn([run() for run in chunks])
    loss.backward()
    return loss.detach()


def cached_backward(chunks: list[Chunk], loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
                    device: torch.device) -> torch.Tensor:
    """The same gradients as `plain_backward(chunks, loss_fn)`, one chunk's graph alive at a time."""
    states, outputs = [], []
    with torch.no_grad():  # step 1
        for run in chunks:
            states.append(rng_state(device))
            outputs.append(run())
    after = rng_state(device)
    leaves = [out.detach().requires_grad_() for out in outputs]
    loss = loss_fn(leaves)  # step 2
    loss.backward()
    for run, state, leaf in zip(chunks, states, leaves):  # step 3
        if leaf.grad is not None:  # an embedding the loss never read sends no gradient
            set_rng_state(state, device)
            run().backward(leaf.grad)
    set_rng_state(after, device)  # as if each chunk had run once: the next draws are the plain step's
    return loss.detach()
