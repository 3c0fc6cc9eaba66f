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

This forward is what the embedder runs wherever it keeps the padding (a GPU, a compiled model);
on a CPU it runs `mltp.packed.forward`, the same modules over the real tokens only.
tests/test_model.py holds both to transformers' numbers. Two things here serve speed, each where
it is done: `upto` / `keep` (only the blocks and states a pooler reads) and the padding mask as
SDPA's additive bias, built once a forward (`attention_bias`).
"""
from __future__ import annotations

import math
from collections.abc import Collection

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


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The boolean mask as SDPA's additive bias: 0 where allowed, -inf elsewhere; (B or 1, 1, T, T).

    Rows are laid out with a stride rounded up to 16 elements, the alignment the memory-efficient
    CUDA kernel wants for its bias (it copies a misaligned one per call); the view shows T columns.
    """
    *lead, T_q, T_k = allowed.shape
    stride = -(-T_k // 16) * 16
    bias = torch.empty(*lead, T_q, stride, dtype=dtype, device=allowed.device)[..., :T_k]  # (.., T, T) view
    return bias.copy_(torch.zeros((), dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf")))


def attention_bias(attention_mask: torch.Tensor | None, T: int, causal: bool, window: int | None,
                   x: torch.Tensor) -> torch.Tensor | None:
    """The mask every block hands SDPA, built once a forward: additive, in the dtype SDPA computes in
    (under autocast, the autocast dtype), so SDPA does not convert a boolean one in every block
    (operator counts: bench/README.md)."""
    allowed = attention_mask_4d(attention_mask, T, causal, window, x.device)
    if allowed is None:
        return None
    kind = x.device.type
    return additive_mask(allowed, torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype)


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

    def forward(self, x, cos, sin, mask, causal: bool):
        B, T, _ = x.shape  # x (B, T, D); cos, sin (B, 1, T, Dh); mask (B or 1, 1, T, T) additive or None
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

    def forward(self, x):  # (..., D) -> (..., D)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU, (..., F) inside


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, causal: bool):
        # pre-norm residual block: x (B, T, D) -> (B, T, D)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, causal)
        return x + self.mlp(self.post_attention_layernorm(x))


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


def check_range(cfg: ModelConfig, upto: int | None, keep: Collection[int] | None) -> int:
    """The number of blocks a forward with these `upto` / `keep` runs; refuses indices outside it."""
    n_blocks = cfg.num_hidden_layers if upto is None else upto
    if not 0 <= n_blocks <= cfg.num_hidden_layers:
        raise ValueError(f"upto={upto} outside 0..{cfg.num_hidden_layers}")
    if keep is not None and not all(0 <= i <= n_blocks for i in keep):
        raise ValueError(f"keep={sorted(keep)} outside the {n_blocks + 1} states 0..{n_blocks} this forward returns")
    return n_blocks


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
        self.compiled: str | None = None  # the torch.compile mode its blocks run under (compile_blocks)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        causal: bool = True,
        upto: int | None = None,
        keep: Collection[int] | None = None,
    ) -> tuple[torch.Tensor | None, ...]:
        """Hidden states (B, T, D): index 0 = embeddings, i = block i, L = block L after the final norm.

        `upto=n` runs blocks 1..n only and returns n+1 states (the final norm only when n = L);
        `keep` names the indices to return, the others are None. A pooler over the middle blocks
        pays for neither the top blocks nor the states it ignores: a state nobody keeps is freed
        once the next block has read it (bench/README.md, "Only the blocks a pooler reads")."""
        cfg = self.config
        B, T = input_ids.shape
        n_blocks = check_range(cfg, upto, keep)
        window = check_batch(cfg, input_ids, attention_mask, causal)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: no mask, SDPA's own causal kernel
        x = self.embed_tokens(input_ids)  # (B, T, D)
        mask = attention_bias(attention_mask, T, causal, window, x)  # (B|1, 1, T, T) or None
        positions = positions_from_mask(attention_mask, B, T, input_ids.device)  # (B, T)
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, x.dtype)  # (B, T, Dh)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, Dh): one table for every head
        states = [x if keep is None or 0 in keep else None]
        for i, block in enumerate(self.layers[:n_blocks], start=1):
            x = self.run_block(block, x, cos, sin, mask, causal)
            states.append(x if keep is None or i in keep else None)
        if n_blocks == cfg.num_hidden_layers and states[-1] is not None:
            states[-1] = self.norm(x)
        return tuple(states)

    def run_block(self, block, *args) -> torch.Tensor:
        """block(*args), or recomputed in backward instead of held (`gradient_checkpointing`, for the
        7B setting's activation memory). `block` may be any function of a block (mltp.packed)."""
        if self.gradient_checkpointing and self.training:
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def logits(self, h_last: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) from the final hidden state."""
        if self.config.tie_word_embeddings:
            return h_last @ self.embed_tokens.weight.T
        if self.lm_head is None:
            raise ValueError("this model was loaded without its LM head: load_model(..., lm_head=True)")
        return self.lm_head(h_last)


# torch.compile's modes, as run.py and bench.py offer them ("default" = torch.compile's mode=None).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_blocks(model: Decoder, mode: str | None = None) -> Decoder:
    """torch.compile every block in place: the one compile switch (run.py --compile [MODE]).

    `mode` is torch.compile's: None (fusion only), "reduce-overhead" (CUDA graphs on a GPU), ...
    The compiled blocks draw random numbers from eager's generator (inductor's `fallback_random`,
    for these blocks only), so LoRA dropout draws eager's masks: compiled training is eager's.
    """
    import torch._inductor

    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; known: {', '.join(COMPILE_MODES)}")
    # torch.compile takes a mode or options, not both: the mode becomes the options it stands
    # for, as torch.compile itself expands it.
    options = {} if mode in (None, "default") else dict(torch._inductor.list_mode_options(mode))
    options["fallback_random"] = True
    for block in model.layers:
        block.compile(options=options)
    model.compiled = mode or "default"
    return model
