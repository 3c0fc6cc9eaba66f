"""One training step: embed a batch, InfoNCE over it, `loss.backward()`.

Shape legend: b queries on this process (the whole batch on one), n_r of them with a hard
negative, D embedding width, P positives and N hard negatives over all processes (P = b and
N = n_r on one).

    q, p, n = embedder(queries), embedder(positives), embedder(negatives)    (b, D), (b, D), (n_r, D)
    loss = InfoNCE: query i against every positive and every hard negative, target its own positive
    (loss / grad_accum).backward()

`joint_forward` runs the three groups as ONE padded forward (the same embeddings: padding is
masked and positions count real tokens) at a third of the launches, for more padded tokens; the
trainer turns it on where launches cost more than arithmetic, on a GPU (mltp.train).

Two variants change where the work happens, not the loss or its gradients:
- GradCache (`gradcache_step`, mltp.gradcache): the same forwards cut into mini-batches, for a
  batch larger than memory; tests/test_gradcache.py holds it equal to this step.
- Several processes (torchrun, mltp.distributed): each embeds its shard of the batch and scores it
  against every process's positives and negatives (`gather_rows`); tests/test_distributed.py holds
  two processes equal to one. On one process the gathers return their input.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .distributed import gather_keys, gather_rows, sum_over_ranks, world
from .embedder import Embedder
from .loss import info_nce


class BatchTexts(NamedTuple):
    queries: list[str]  # formatted (instruction included), one per row of this process's shard
    positives: list[str]
    negatives: list[str]  # only the rows that have one
    pos_keys: list[int]  # text keys of the positives (false-negative masking, mltp.loss)
    neg_keys: list[int]


def contrastive_step(embedder: Embedder, texts: BatchTexts, cfg) -> tuple[torch.Tensor, int]:
    """Back-propagate this process's share of the batch loss / cfg.grad_accum.

    Returns the batch loss (the mean over every process's queries) and the real tokens embedded
    by every process; both the same on every process."""
    groups = tokenize(embedder, texts, cfg.max_length)
    outputs = [embed(embedder, rows) for rows in forwards(groups, cfg.joint_forward)]
    loss = batch_loss(torch.cat(outputs), groups, texts, cfg)
    (loss / cfg.grad_accum).backward()
    return batch_mean(loss, groups)


def tokenize(embedder: Embedder, texts: BatchTexts, max_length: int) -> list[list[list[int]]]:
    """Token ids of the queries, the positives and the negatives: three groups of rows."""
    return [embedder.tokenizer.encode_ids(g, max_length) if g else [] for g in (texts.queries, texts.positives, texts.negatives)]


def forwards(groups: list[list[list[int]]], joint: bool) -> list[list[list[int]]]:
    """The rows of each forward, in order: one a group, or all three groups in one."""
    return [[r for g in groups for r in g]] if joint else [g for g in groups if g]


def embed(embedder: Embedder, rows: list[list[int]]) -> torch.Tensor:
    ids, mask = embedder.batch(rows)  # (n, T), left-padded
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.device.type == "cuda"):
        return embedder(ids, mask)  # (n, D)


def batch_loss(embeddings: torch.Tensor, groups: list, texts: BatchTexts, cfg) -> torch.Tensor:
    """InfoNCE of this process's queries against every process's candidates."""
    device = embeddings.device
    q, p, n = embeddings.split([len(g) for g in groups])  # (b + b + n_r, D) -> (b, D), (b, D), (n_r, D)
    p_all, first = gather_rows(p)  # (P, D): every process's positives in rank order; ours start at `first`
    n_all, _ = gather_rows(n)  # (N, D)
    pos_keys = torch.tensor(texts.pos_keys, dtype=torch.long, device=device)
    neg_keys = torch.tensor(texts.neg_keys, dtype=torch.long, device=device)
    cand_keys = torch.cat([gather_keys(pos_keys), gather_keys(neg_keys)])  # (P + N,), the candidates' order
    return info_nce(q, p_all, n_all if n_all.shape[0] else None, scale=cfg.scale, pos_keys=pos_keys,
                    cand_keys=cand_keys, first=first)


def batch_mean(loss: torch.Tensor, groups: list) -> tuple[torch.Tensor, int]:
    """The loss averaged over processes (equal shards: the mean of their means) and the tokens of all."""
    n_tokens = sum(len(r) for g in groups for r in g)
    total = sum_over_ranks(torch.stack([loss.detach().float(), torch.tensor(float(n_tokens), device=loss.device)]))
    return total[0] / world().size, int(total[1])
