"""Which pooling flags a pooler kind uses, found by trying them rather than from a hand-kept table.

`--layers` means nothing to the EOS pooler, and `--latents` nothing to a layer mean; a run must
not record such a flag as if it had shaped the model. For each flag, two poolers of the kind are
built on a tiny random input, once with a base value and once with another: the flag is used when
the two differ in parameter count, in the hidden states they read, or in their output (same seed
for both initialisations). Each flag is tried twice, with the other flags at their base values and
at their other values, since one flag can matter only beside another (heads split attention over
many tokens, never over the one EOS token). New kinds are covered without touching this file.
"""
from __future__ import annotations

import functools

import torch

from .pooling import PoolerConfig, build_pooler

# run.py flag (argument dest) -> (PoolerConfig field, base value, another value). The tiny probe
# has D = 8 and L = 4: two heads of width 4 at base.
FLAGS = {
    "layers": ("layers", "all", "last2"),
    "layer_token": ("layer_token", "eos", "mean"),
    "no_layer_weights": ("layer_weights", True, False),
    "tokens": ("tokens", "eos", "all"),
    "latents": ("num_latents", 2, 3),
    "heads": ("num_heads", 2, 4),
    "head_dim": ("head_dim", None, 2),
    "layer_weight_std": ("layer_weight_std", 1.0, 2.0),
}
# --block is checked by resolve() instead: a block number is refused outright by the kinds that
# read several blocks, which would make every flag look used in the probe's second context.
_BASE = dict(hidden_size=8, num_layers=4, dictionary_size=4, **{field: base for field, base, _ in FLAGS.values()})


def _probe(kind: str, **change) -> tuple:
    torch.manual_seed(0)
    pooler = build_pooler(PoolerConfig(kind=kind, **{**_BASE, **change})).eval()
    g = torch.Generator().manual_seed(1)
    hidden = tuple(torch.randn(2, 5, 8, generator=g) for _ in range(5))  # L+1 states of (B, T, D)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # (B, T), one row left-padded
    with torch.no_grad():
        out = pooler(hidden, mask)  # (B, D)
    return sum(p.numel() for p in pooler.parameters()), tuple(pooler.needs_layers), out


@functools.lru_cache(maxsize=None)
def unused_flags(kind: str) -> tuple[str, ...]:
    """The flags (argument dests) that change nothing for this pooler kind."""
    unused = []
    for flag, (field, base, other) in FLAGS.items():
        others = {f: o for name, (f, _, o) in FLAGS.items() if name != flag}
        try:
            same = all(_same(_probe(kind, **context, **{field: base}), _probe(kind, **context, **{field: other}))
                       for context in ({}, others))
        except ValueError:
            same = False  # a kind that refuses a probe value has a use for the flag: never called unused
        if same:
            unused.append(flag)
    return tuple(unused)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
