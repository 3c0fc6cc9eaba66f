"""A line every half minute while a long encode runs: texts done and an ETA from tokens done.

Tokens, not texts, set the ETA: encode runs the longest texts first, so texts done would promise
too much too early.
"""
from __future__ import annotations

import time
from typing import Callable


class Progress:
    EVERY = 30.0  # seconds between lines; a short encode says nothing

    def __init__(self, log: Callable[[str], None] | None, n_texts: int, n_tokens: int):
        self.log, self.n_texts, self.n_tokens = log, n_texts, n_tokens
        self.done_tokens, self.t0 = 0, time.perf_counter()
        self.last = self.t0

    def step(self, texts_done: int, tokens: int) -> None:
        self.done_tokens += tokens
        now = time.perf_counter()
        if self.log is None or now - self.last < self.EVERY:
            return
        self.last = now
        left = (now - self.t0) * (self.n_tokens - self.done_tokens) / max(self.done_tokens, 1)
        self.log(f"  encoded {texts_done:,} of {self.n_texts:,} texts, about {left:.0f} s left")
