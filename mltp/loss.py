"""InfoNCE with in-batch and hard negatives: the official "hard-negative NLL" loss.

Shape legend: B queries in the batch, K hard negatives per query, N = B*K hard negatives in the
batch (or any N for a flat pool), D embedding width, C = B + N candidates (P + N when the
queries are a shard of P, see `first`).

As yixuantt/PoolingAndAttn loss/HardNegativeNLLLoss.py: the candidates of query i are all B
positives of the batch followed by every hard negative of the batch (N); the logits are cosine
similarities times `scale` (20, i.e. temperature 0.05); cross-entropy with target i (its own
positive), averaged over the batch. Computed in fp32 whatever the autocast dtype.

Additions to the official loss:
- False-negative masking. The caller gives an integer key per text (a hash of the text):
  `pos_keys` (B,) for the positives, `cand_keys` (C,) for all candidates in the order above.
  Any candidate other than i's own positive whose key equals `pos_keys[i]` is the same text as
  i's positive (a duplicate in the batch, or a "hard negative" that is the positive) and is
  dropped from i's softmax (logit -inf). With n=None, `cand_keys` defaults to `pos_keys`.
- `first` places query 0's own positive at candidate column `first`: `p` may then hold more
  positives than there are queries (P >= first + B), as when one rank of several scores its shard
  of the queries against every rank's positives (mltp.distributed); `pos_keys` are the B queries'
  own, equal to `cand_keys[first:first + B]`.
Non-finite embeddings are not checked here: they give a non-finite loss, which the training loop
checks once per step (one place, not one per loss term).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor | None = None,
    *,
    scale: float = 20.0,
    pos_keys: torch.Tensor | None = None,
    cand_keys: torch.Tensor | None = None,
    first: int = 0,
) -> torch.Tensor:
    if q.dim() != 2 or p.dim() != 2 or p.shape[1] != q.shape[1] or not 0 <= first <= p.shape[0] - q.shape[0]:
        raise ValueError(f"q and p must be (B, D) and (P, D) with P >= first + B (first={first}); "
                         f"got q {tuple(q.shape)}, p {tuple(p.shape)}")
    B, D = q.shape
    if n is None:
        negatives = q.new_zeros(0, D)  # (0, D)
    elif n.dim() == 2 and n.shape[1] == D:
        # (N, D): one hard negative per query (N = B), or, as upstream, a flat pool of any size
        # (e.g. only the rows that have a negative): every one is a candidate for every query.
        negatives = n
    elif n.dim() == 3 and n.shape[0] == B and n.shape[2] == D:
        negatives = n.reshape(B * n.shape[1], D)  # (B, K, D) -> (B*K, D), query-major
    else:
        raise ValueError(f"n must be None, (N, D) or (B, K, D) with B={B}, D={D}; got {tuple(n.shape)}")

    # Cosine as upstream's cos_sim: normalising again is a no-op for unit vectors, in fp32.
    q32 = F.normalize(q.float(), dim=-1)  # (B, D)
    p32 = F.normalize(p.float(), dim=-1)  # (P, D); P = B unless a shard
    candidates = torch.cat([p32, F.normalize(negatives.float(), dim=-1)])  # (C, D), C = P + N
    logits = scale * q32 @ candidates.T  # (B, C); column first + i is query i's own positive
    target = first + torch.arange(B, device=q.device)

    if pos_keys is not None:
        pos_keys, cand_keys = _check_keys(pos_keys, cand_keys, B, candidates.shape[0], n is None, q.device, first)
        own = F.one_hot(target, candidates.shape[0]).bool()  # (B, C)
        logits = logits.masked_fill((pos_keys[:, None] == cand_keys[None, :]) & ~own, float("-inf"))
    elif cand_keys is not None:
        raise ValueError("cand_keys given without pos_keys")
    return F.cross_entropy(logits, target)


def _check_keys(pos_keys, cand_keys, B, C, no_negatives, device, first):
    pos_keys = torch.as_tensor(pos_keys, device=device)
    if pos_keys.shape != (B,) or pos_keys.is_floating_point():
        raise ValueError(f"pos_keys must be B={B} integer keys, got {pos_keys.dtype} {tuple(pos_keys.shape)}")
    if cand_keys is None:
        if not no_negatives:
            raise ValueError(f"hard negatives given: cand_keys must key all C={C} candidates (positives first)")
        cand_keys = pos_keys
    cand_keys = torch.as_tensor(cand_keys, device=pos_keys.device)
    if cand_keys.shape != (C,) or cand_keys.is_floating_point():
        raise ValueError(f"cand_keys must be C={C} integer keys (B positives then N negatives), got {cand_keys.dtype} {tuple(cand_keys.shape)}")
    if not torch.equal(cand_keys[first:first + B], pos_keys):
        raise ValueError(f"cand_keys[{first}:{first + B}] must equal pos_keys (the queries' own positives)")
    return pos_keys, cand_keys
