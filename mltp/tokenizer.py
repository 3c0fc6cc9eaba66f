"""Batch tokenisation for embedding: every text ends in the end-of-text token, then padding.

The official code (like E5-Mistral) appends EOS so the last token of a causal model has read the
whole text: EOS-last pooling reads that token. Truncation keeps room for it, so it is never cut off.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer as RawTokenizer


class Tokenizer:
    def __init__(self, raw: RawTokenizer, eos_token_id: int, pad_token_id: int | None = None):
        self.tokenizer = raw
        self.eos_token_id = eos_token_id
        # The pad id never reaches attention (masked), so EOS serves when the model has none.
        self.pad_token_id = eos_token_id if pad_token_id is None else pad_token_id

    def encode_ids(self, texts: list[str], max_length: int = 512, add_eos: bool = True) -> list[list[int]]:
        """Token ids per text, truncated so that the appended EOS always fits in max_length."""
        if not texts:
            raise ValueError("no texts to tokenise (empty list)")
        budget = max_length - 1 if add_eos else max_length
        rows = [enc.ids[:budget] for enc in self.tokenizer.encode_batch(list(texts))]
        return [ids + [self.eos_token_id] for ids in rows] if add_eos else rows

    def pad(self, rows: list[list[int]], padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), both (B, T) int64, T = the longest row."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got '{padding_side}'")
        T = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), T), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for b, ids in enumerate(rows):
            span = slice(T - len(ids), T) if padding_side == "left" else slice(0, len(ids))
            input_ids[b, span] = torch.tensor(ids, dtype=torch.long)
            mask[b, span] = 1
        return input_ids, mask

    def encode_batch(
        self, texts: list[str], max_length: int = 512, padding_side: str = "left", add_eos: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pad(self.encode_ids(texts, max_length, add_eos), padding_side)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]


def _token_id(raw: RawTokenizer, token) -> int | None:
    if isinstance(token, dict):  # tokenizer_config.json may store AddedToken objects
        token = token.get("content")
    return raw.token_to_id(token) if isinstance(token, str) else None


def load_tokenizer(path_or_name: str | Path) -> Tokenizer:
    from .formats.checkpoint import resolve_model

    directory = resolve_model(path_or_name)
    path = directory / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer.json in {directory}")
    raw = RawTokenizer.from_file(str(path))
    tok_cfg_path, cfg_path = directory / "tokenizer_config.json", directory / "config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.exists() else {}
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}

    eos = _token_id(raw, tok_cfg.get("eos_token"))
    if eos is None:
        eos = cfg.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) else eos
    if eos is None:
        raise ValueError(f"cannot find the end-of-text token: neither {tok_cfg_path.name} 'eos_token' nor config.json 'eos_token_id'")
    pad = _token_id(raw, tok_cfg.get("pad_token"))
    if pad is None:
        pad = cfg.get("pad_token_id")
    return Tokenizer(raw, int(eos), None if pad is None else int(pad))
