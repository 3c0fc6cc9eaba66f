"""One contrastive step's forward and backward: plain or GradCache, on one rank or several.

Shape legend: b queries on this rank (the whole batch on one rank), n_r of them with a hard
negative, D embedding width, P positives and N hard negatives over all ranks.

The forwards are the trainer's (mltp.train): one per group (queries, positives, negatives) or one
joint forward of all three; `mini_batch` cuts each into pieces of at most that many texts and
trains them with GradCache (mltp.gradcache). Candidates come from every rank (mltp.distributed).
With neither, this is exactly `mltp.train.batch_loss` followed by its backward: the same forwards
in the same order, so the same dropout draws.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .distributed import gather_keys, gather_rows, sum_over_ranks, world
from .embedder import Embedder
from .gradcache import cached_backward, plain_backward
from .loss import info_nce


class BatchTexts(NamedTuple):
    queries: list[str]  # formatted (instruction included), one per row of this rank's shard
    positives: list[str]
    negatives: list[str]  # only the rows that have one
    pos_keys: list[int]  # text keys of the positives (false-negative masking, mltp.loss)
    neg_keys: list[int]


def contrastive_backward(embedder: Embedder, texts: BatchTexts, cfg) -> tuple[torch.Tensor, int]:
    """Back-propagate this rank's share of the batch loss / cfg.grad_accum.

    Returns the batch loss (the mean over every rank's queries) and the real tokens every rank
    embedded; both are the same on every rank."""
    device = next(embedder.model.parameters()).device
    groups = [embedder.tokenizer.encode_ids(g, cfg.max_length) if g else [] for g in
              (texts.queries, texts.positives, texts.negatives)]
    forwards = [[r for g in groups for r in g]] if cfg.joint_forward else [g for g in groups if g]
    size = cfg.mini_batch or max(len(f) for f in forwards)
    chunks = [embed(embedder, f[i:i + size]) for f in forwards for i in range(0, len(f), size)]

    pos_keys = torch.tensor(texts.pos_keys, dtype=torch.long, device=device)
    neg_keys = torch.tensor(texts.neg_keys, dtype=torch.long, device=device)
    losses = []

    def loss_fn(outputs: list[torch.Tensor]) -> torch.Tensor:
        q, p, n = torch.cat(outputs).split([len(g) for g in groups])  # (b + b + n_r, D) -> (b, D), (b, D), (n_r, D)
        p_all, first = gather_rows(p)  # (P, D): every rank's positives, rank order; ours start at `first`
        n_all, _ = gather_rows(n)  # (N, D)
        cand_keys = torch.cat([gather_keys(pos_keys), gather_keys(neg_keys)])  # (P + N,), the candidates' order
        loss = info_nce(q, p_all, n_all if n_all.shape[0] else None, scale=cfg.scale, symmetric=cfg.symmetric,
                        pos_keys=pos_keys, cand_keys=cand_keys, first=first)
        losses.append(loss.detach())
        return loss / cfg.grad_accum

    if cfg.mini_batch:
        cached_backward(chunks, loss_fn, device)
    else:
        plain_backward(chunks, loss_fn)
    n_tokens = sum(len(r) for g in groups for r in g)
    # Equal shards: the batch mean is the mean of the ranks' means.
    total = sum_over_ranks(torch.stack([losses[0].float(), torch.tensor(float(n_tokens), device=device)]))
    return total[0] / world().size, int(total[1])


def embed(embedder: Embedder, rows: list[list[int]]):
    def run() -> torch.Tensor:
        ids, mask = embedder.batch(rows)  # (n, T), left-padded
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.device.type == "cuda"):
            return embedder(ids, mask)  # (n, D)
    return run
