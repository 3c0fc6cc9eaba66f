"""A Llama / Mistral / Qwen2 decoder that returns every hidden state: the textbook forward.

Shape legend:
    B batch, T tokens, D hidden size, H query heads, K key/value heads, Dh head width,
    F feed-forward width, L transformer blocks, V vocabulary.

The model is the pre-norm decoder, read top to bottom in `Decoder.forward`:

    x = embed(ids)                                          (B, T, D)
    for each of the L blocks:
        x = x + attention(RMSNorm(x))                       RoPE on q and k, GQA through SDPA
        x = x + SwiGLU-MLP(RMSNorm(x))
    the states: the embeddings, each block's output, and the last one after the final RMSNorm

RoPE follows Hugging Face's split-half convention (rotate_half). Deviations from `transformers`'
forward, all deliberate:
- `causal=False` drops the causal mask (padding stays masked): the paper's "bidirectional" models
  M4/M5 use the same weights with no extra pre-training (arXiv 2409.02727; upstream
  yixuantt/PoolingAndAttn models/bidirectional_mistral.py).
- Position ids come from the attention mask (count of real tokens so far), so a left-padded text gets
  the same positions as an unpadded one. transformers' forward numbers pad positions too unless
  `position_ids` is passed; its `generate()` does what we do.
- Pad queries may attend to themselves, so no softmax row is empty (an all-masked row gives NaN);
  their outputs are meaningless and every pooler ignores them.
- No KV cache and no LM head by default: this decoder embeds, it does not generate.

This file holds no speed measure. `mltp/fast.py` runs the same modules with them (padding
skipped, only the blocks a pooler reads, fewer operators per block), entering through the one
`fast` argument of Attention and MLP; the embedder encodes and trains through it, and
tests/test_model.py holds both forwards to transformers' numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2) + eps), in fp32 and cast back before the scale, as transformers'
        # LlamaRMSNorm; F.rms_norm is torch's own spelling of it.
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def positions_from_mask(attention_mask: torch.Tensor | None, B: int, T: int, device) -> torch.Tensor:
    """Position ids (B, T): 0, 1, 2, ... over each row's real tokens; pads reuse 0."""
    if attention_mask is None:
        return torch.arange(T, device=device).expand(B, T)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos and sin tables (..., Dh) for positions (...), computed in fp32 and cast to `dtype`."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # (..., Dh/2)
    # split-half, not interleaved: dimension i and i + Dh/2 share angle i
    angles = torch.cat([freqs, freqs], dim=-1)  # (..., Dh)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # (..., Dh/2) each
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Rotates each pair (i, i + Dh/2) of x by its position's angle i (Hugging Face's convention).
    return x * cos + rotate_half(x) * sin


def attention_mask_4d(
    key_mask: torch.Tensor | None, T: int, causal: bool, window: int | None, device
) -> torch.Tensor | None:
    """Boolean mask (B or 1, 1, T, T), True = may attend; None when plain causal SDPA suffices."""
    if key_mask is None and window is None:
        return None  # no padding: SDPA's own is_causal (or no mask at all) is exact
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    allowed = torch.ones(T, T, dtype=torch.bool, device=device)
    if causal:
        allowed = j <= i
        if window is not None:
            allowed = allowed & (j > i - window)  # Mistral: a token sees the last `window` tokens
    allowed = allowed[None, None]  # (1, 1, T, T)
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, None, :]  # (B, 1, T, T)
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=device)  # pad rows see themselves
    return allowed


def reference_attention(q, k, v, mask):
    """The math SDPA performs, spelled out (used by tests; q (B,H,T,Dh), k/v (B,K,T,Dh))."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)  # (B, H, T, Dh): each KV head serves H/K query heads
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores.float().softmax(-1).to(q.dtype) @ v  # (B, H, T, Dh)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        D = cfg.hidden_size
        self.q_proj = nn.Linear(D, self.n_heads * self.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(D, self.n_kv * self.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(D, self.n_kv * self.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, D, bias=cfg.o_bias)

    def forward(self, x, cos, sin, mask, causal: bool, fast=None):
        if fast is not None:  # the tuned path: mltp/fast.py, same math
            return fast.attention(self, x, cos, sin, mask, causal)
        B, T, _ = x.shape  # x (B, T, D); cos, sin (B, 1, T, Dh); mask (B or 1, 1, T, T) bool or None
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, K, T, Dh)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, K, T, Dh)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # enable_gqa: each KV head serves H/K query heads without being copied H/K times
        # (what `reference_attention` spells out with repeat_interleave).
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None, enable_gqa=self.n_kv != self.n_heads
        )  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*Dh)
        return self.o_proj(out)  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x, fast=None):  # (..., D) -> (..., D)
        if fast is not None:  # the tuned path: mltp/fast.py, same math
            return fast.mlp(self, x)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU, (..., F) inside


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, causal: bool, fast=None):
        # pre-norm residual block: x (B, T, D) -> (B, T, D); `fast` (mltp/fast.py) passes through
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, causal, fast)
        return x + self.mlp(self.post_attention_layernorm(x), fast)


def check_batch(cfg: ModelConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, causal: bool) -> int | None:
    """Refuse what the forward cannot honour; return the sliding window in force, if any."""
    T = input_ids.shape[1]
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    window = cfg.sliding_window if cfg.sliding_window is not None and T > cfg.sliding_window else None
    if window is not None and not causal:
        raise ValueError(
            f"sequence of {T} tokens exceeds the sliding window ({cfg.sliding_window}); "
            "a bidirectional sliding window is undefined here: truncate to the window"
        )
    return window


class Decoder(nn.Module):
    """Module names mirror transformers' LlamaModel, so checkpoints and PEFT adapters map 1:1."""

    def __init__(self, cfg: ModelConfig, *, lm_head: bool = False):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # Untied checkpoints carry a separate LM head; only next-token checks need it.
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False) if lm_head and not cfg.tie_word_embeddings else None
        self.gradient_checkpointing = False

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, causal: bool = True
    ) -> tuple[torch.Tensor, ...]:
        """Hidden states (B, T, D): index 0 = embeddings, i = block i, L = block L after the final norm."""
        cfg = self.config
        B, T = input_ids.shape
        window = check_batch(cfg, input_ids, attention_mask, causal)
        mask = attention_mask_4d(attention_mask, T, causal, window, input_ids.device)  # (B|1, 1, T, T) or None
        x = self.embed_tokens(input_ids)  # (B, T, D)
        positions = positions_from_mask(attention_mask, B, T, input_ids.device)  # (B, T)
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, x.dtype)  # (B, T, Dh)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, Dh): one table for every head
        states = [x]
        for block in self.layers:
            x = self.run_block(block, x, cos, sin, mask, causal)
            states.append(x)
        states[-1] = self.norm(x)
        return tuple(states)

    def run_block(self, block: Block, *args) -> torch.Tensor:
        if self.gradient_checkpointing and self.training:
            # Recomputed in backward instead of held: activation memory, for the 7B setting.
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def logits(self, h_last: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) from the final hidden state."""
        if self.config.tie_word_embeddings:
            return h_last @ self.embed_tokens.weight.T
        if self.lm_head is None:
            raise ValueError("this model was loaded without its LM head: load_model(..., lm_head=True)")
        return self.lm_head(h_last)
