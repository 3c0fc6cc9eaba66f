"""Which transformer blocks a multi-layer pooler reads: the layer-spec grammar.

Blocks are numbered 1..L, as in the Hugging Face `output_hidden_states` tuple, whose index 0 is
the embedding output. The official MLTP code reads blocks 1..L and never index 0
(yixuantt/PoolingAndAttn, model_loaders/model3.py: `range(1, layers + 1)`); so do we.

Grammar (the study's second ablation: all layers vs. the last 4 vs. the middle 4 vs. a list):

    all          every block, 1..L
    lastN        the N blocks nearest the output: L-N+1 .. L
    firstN       the N blocks nearest the input: 1 .. N
    middleN      N consecutive blocks centred on the middle of 1..L, start = (L - N) // 2 + 1.
                 Tie rule: when L - N is odd the window cannot sit exactly in the middle; the
                 floor puts it one block closer to the input (L=30, N=3 -> 14,15,16, not 15,16,17).
    1,5,9        an explicit list
    10-13        an inclusive range
    1,3-5        both, mixed

A sequence of ints is taken as an explicit list. The result is always ascending and
duplicate-free; anything else is a ValueError naming the spec and L.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

_NAMED = re.compile(r"(last|first|middle)(\d+)")
_ITEM = re.compile(r"(\d+)(?:-(\d+))?")


def parse_layers(spec: str | Sequence[int], num_layers: int) -> tuple[int, ...]:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    L = num_layers

    def fail(why: str) -> ValueError:
        return ValueError(f"layer spec {spec!r} with L={L} blocks: {why}")

    if isinstance(spec, str):
        text = spec.strip().lower()
        if not text:
            raise fail("empty spec")
        if text == "all":
            return tuple(range(1, L + 1))
        named = _NAMED.fullmatch(text)
        if named:
            form, n = named.group(1), int(named.group(2))
            if n < 1:
                raise fail(f"N must be at least 1, got {n}")
            if n > L:
                raise fail(f"N={n} is more than the {L} blocks of the model")
            start = {"first": 1, "last": L - n + 1, "middle": (L - n) // 2 + 1}[form]
            return tuple(range(start, start + n))
        indices = _parse_list(text, fail)
    elif isinstance(spec, Sequence):
        if any(isinstance(i, bool) or not isinstance(i, int) for i in spec):
            raise fail("a list spec must hold ints only")
        indices = list(spec)
    else:
        raise fail(f"expected a string or a sequence of ints, got {type(spec).__name__}")

    if not indices:
        raise fail("empty spec")
    outside = [i for i in indices if not 1 <= i <= L]
    if outside:
        raise fail(f"block(s) {outside} outside 1..{L} (index 0, the embedding output, is never used)")
    duplicates = sorted({i for i in indices if indices.count(i) > 1})
    if duplicates:
        raise fail(f"block(s) {duplicates} given more than once")
    return tuple(sorted(indices))


def _parse_list(text: str, fail) -> list[int]:
    indices: list[int] = []
    for item in text.split(","):
        item = item.strip()
        match = _ITEM.fullmatch(item)
        if not match:
            raise fail(f"unknown form {item!r} (expected all, lastN, firstN, middleN, 'i,j', 'i-j')")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise fail(f"range {item!r} runs backwards")
        indices.extend(range(lo, hi + 1))
    return indices


def describe_layers(spec: str | Sequence[int], num_layers: int) -> str:
    """What every run prints after `layers:`, e.g. `middle4 -> 4 of 30 blocks: 14-17`."""
    layers = parse_layers(spec, num_layers)
    shown = spec if isinstance(spec, str) else ",".join(str(i) for i in spec)
    return f"{shown} -> {len(layers)} of {num_layers} blocks: {_compact(layers)}"


def _compact(layers: tuple[int, ...]) -> str:
    # (1, 2, 3, 7, 9, 10) -> "1-3,7,9-10": runs of consecutive blocks as ranges.
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)
