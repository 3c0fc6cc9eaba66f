"""A Llama / Mistral / Qwen2 decoder that returns every hidden state.

Shape legend:
    B batch, T tokens, D hidden size, H query heads, K key/value heads, Dh head width,
    F feed-forward width, L transformer blocks, V vocabulary.

The model is the textbook pre-norm decoder (RMSNorm -> attention -> residual, RMSNorm -> SwiGLU ->
residual) with rotary position embeddings in Hugging Face's split-half convention. Deviations from
`transformers`' forward, all deliberate:
- `causal=False` drops the causal mask (padding stays masked): the paper's "bidirectional" models
  M4/M5 use the same weights with no extra pre-training (paper.md).
- Position ids come from the attention mask (count of real tokens so far), so a left-padded text gets
  the same positions as an unpadded one. transformers' forward numbers pad positions too unless
  `position_ids` is passed; its `generate()` does what we do.
- Pad queries may attend to themselves, so no softmax row is empty (an all-masked row gives NaN);
  their outputs are meaningless and every pooler ignores them. Encoding on the CPU, the blocks
  skip pad tokens altogether (`Layout`) and the returned states hold zeros there.
- No KV cache and no LM head by default: this decoder embeds, it does not generate.

Speed. At the default model's size a GPU waits on the host issuing kernels, not on arithmetic
(bench/README.md: 1-13% MFU on an H100), so the forward issues as few operators as the math allows:
one fused RMSNorm, RoPE as a roll and an addcmul with the sign folded into the sin table, the
padding mask turned into SDPA's additive bias once per forward instead of inside SDPA per block,
and tokens kept flat (n, D) through the projections. Encoding on the CPU, where time is
arithmetic, the blocks compute on the real tokens only (`Layout`). Same math as transformers (the
parity tests hold); bench/bench.py counts the operators each side dispatches.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from typing import NamedTuple

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
        # Normalised in fp32 and cast back before the scale, as transformers' LlamaRMSNorm. F.rms_norm
        # is one fused kernel on CUDA (torch >= 2.9) where the spelled-out x * rsqrt(mean(x^2) + eps)
        # launches five: at these model sizes the GPU waits on launches, not on arithmetic.
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos and signed sin tables (n, 1, Dh) for the split-half rotation of n tokens, in fp32 first.

    `positions` (n,) are the computed tokens' positions, flat (see `Layout`). The sin table carries
    rotate_half's sign (-sin on the first half, +sin on the second), so `apply_rope` needs a roll
    instead of chunk + negate + cat: once per forward here, not per block.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq  # (n, Dh/2)
    cos = freqs.cos()  # (n, Dh/2)
    sin = freqs.sin()
    # split-half, not interleaved: dimension i and i + Dh/2 share angle i. (n, 1, Dh): the 1
    # broadcasts over heads, added here once rather than in every block.
    return torch.cat([cos, cos], dim=-1)[:, None].to(dtype), torch.cat([-sin, sin], dim=-1)[:, None].to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    # x (n, H, Dh). HF: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]
    # = roll(x, Dh/2) * [-1 | +1]; the sign lives in `signed_sin`. Three kernels instead of five;
    # addcmul rounds once where HF rounds the product and the sum apart (bf16: <= 1 ulp apart).
    rolled = x.roll(x.shape[-1] // 2, dims=-1)  # [x2, x1]
    return torch.addcmul(x * cos, rolled, signed_sin)  # cos, signed_sin (n, 1, Dh)


class Layout(NamedTuple):
    """Which tokens of a padded (B, T) batch the blocks compute: all B*T, or only the real ones.

    Padding is dead weight in every projection and MLP, which are nearly all of a forward's
    arithmetic: a batch of lengths uniform in [T/4, T] is 37% pad on average. With `rows` set, the blocks carry
    only the n real tokens (n, D) and lay them out padded just for attention, the one step that needs
    the (B, T) grid. Same math at the real tokens (the parity tests check both layouts against each
    other and against transformers); the pad positions of the returned states are zeros, not the
    meaningless values a padded forward leaves there, and every pooler ignores them either way.
    """

    B: int
    T: int
    rows: torch.Tensor | None = None  # (n,) flat indices into B*T of the computed tokens; None = all

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        # (n, ...) -> (B*T, ...), zeros at the pads
        if self.rows is None:
            return x
        return x.new_zeros(self.B * self.T, *x.shape[1:]).index_copy_(0, self.rows, x)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        # (B*T, ...) -> (n, ...)
        return x if self.rows is None else x.index_select(0, self.rows)


def attention_mask_4d(
    key_mask: torch.Tensor | None, T: int, causal: bool, window: int | None, device
) -> torch.Tensor | None:
    """Boolean mask (B or 1, 1, T, T), True = may attend; None when plain causal SDPA suffices."""
    if key_mask is None and window is None:
        return None  # no padding: SDPA's own is_causal (or no mask at all) is exact and fastest
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

    SDPA turns a boolean mask into this bias itself, on every call: three kernels per block (two
    scalar fills and a `where`) that one conversion per forward replaces. The rows are laid out
    with a stride rounded up to 16 elements, the alignment the memory-efficient CUDA kernel wants
    for its bias (it copies a misaligned one, again per call); the view shows exactly T columns.
    """
    *lead, T_q, T_k = allowed.shape
    stride = -(-T_k // 16) * 16
    bias = torch.empty(*lead, T_q, stride, dtype=dtype, device=allowed.device)[..., :T_k]  # (.., T, T) view
    return bias.copy_(torch.zeros((), dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf")))


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

    def forward(self, x, cos, sin, mask, causal: bool, layout: Layout):
        # x (n, D), n = B*T or the real tokens only (Layout): tokens stay flat through the
        # projections, whose F.linear on a 2-D input is one matmul call (on 3-D it adds a view and an
        # unsafe_view per projection, host time per call). RoPE too runs on the n computed tokens.
        n, (B, T) = x.shape[0], layout[:2]
        q = apply_rope(self.q_proj(x).view(n, self.n_heads, self.head_dim), cos, sin)  # (n, H, Dh)
        k = apply_rope(self.k_proj(x).view(n, self.n_kv, self.head_dim), cos, sin)  # (n, K, Dh)
        v = self.v_proj(x).view(n, self.n_kv, self.head_dim)  # (n, K, Dh)
        q, k, v = (layout.padded(t).view(B, T, -1, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H|K, T, Dh)
        gqa = self.n_kv != self.n_heads
        # enable_gqa lets SDPA share each KV head across H/K query heads without copying it. With a
        # padding mask too, expanding K/V to H heads first was measured SLOWER on an H100 (fwd+bwd
        # 0.60x at SmolLM2's heads, 0.80x Qwen2-0.5B, 0.87x Mistral-7B: bench/sdpa_gqa.py), so we don't.
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None, enable_gqa=gqa
        )  # (B, H, T, Dh)
        out = layout.packed(out.transpose(1, 2).reshape(B * T, self.n_heads * self.head_dim))  # (n, H*Dh)
        return self.o_proj(out)  # (n, D)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):  # (n, D) -> (n, D)
        gate, up = self.gate_proj(x), self.up_proj(x)  # (n, F) each
        if torch.is_grad_enabled():
            return self.down_proj(F.silu(gate) * up)  # SwiGLU; autograd keeps gate and up for backward
        # Encoding: in place, so the product needs no third (B*T, F) buffer. The last block's MLP
        # is a forward's memory peak (every earlier hidden state is still held); without this,
        # the additive mask bias (2 bytes an entry vs transformers' boolean 1) put mltp above it.
        return self.down_proj(F.silu(gate, inplace=True).mul_(up))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, causal: bool, layout: Layout):
        # x (n, D) -> (n, D); cos/sin (n, 1, Dh); layout says where the n tokens sit in (B, T)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, causal, layout)
        return x + self.mlp(self.post_attention_layernorm(x))


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
        self.skip_padding: bool | None = None  # None: CPU eval mode only (skips_padding)

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

        `upto=n` runs only blocks 1..n and returns n+1 states (a pooler reading only the middle
        layers need not pay for the top ones); the final norm applies only when n == L.
        `keep` (default: all) names the indices to return; the others are None. Encoding, a state
        nobody holds is freed when the next block has read it, so a pooler over the middle 4 blocks
        holds 4 states at the end, not 18 (the pooler contract allows None: mltp.pooling).
        """
        cfg = self.config
        B, T = input_ids.shape
        n_blocks = cfg.num_hidden_layers if upto is None else upto
        if not 0 <= n_blocks <= cfg.num_hidden_layers:
            raise ValueError(f"upto={upto} outside 0..{cfg.num_hidden_layers}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
        window = cfg.sliding_window if cfg.sliding_window is not None and T > cfg.sliding_window else None
        if window is not None and not causal:
            raise ValueError(
                f"sequence of {T} tokens exceeds the sliding window ({cfg.sliding_window}); "
                "a bidirectional sliding window is undefined here: truncate to the window"
            )
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: take the fast unmasked SDPA path
        if attention_mask is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        else:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T), pads reuse 0
        layout = Layout(B, T)
        if attention_mask is not None and self.skips_padding(input_ids.device):
            layout = Layout(B, T, attention_mask.flatten().nonzero().flatten())  # rows (n,) of the real tokens
        x = self.embed_tokens(layout.packed(input_ids.reshape(B * T)))  # (n, D)
        positions = layout.packed(positions.reshape(B * T))  # (n,)
        mask = attention_mask_4d(attention_mask, T, causal, window, input_ids.device)
        if mask is not None:
            # In the dtype SDPA will see: the autocast dtype under autocast (SDPA casts to it).
            dev = input_ids.device.type
            mask = additive_mask(mask, torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype)
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, x.dtype)  # (n, 1, Dh): heads broadcast
        if keep is not None and not all(0 <= i <= n_blocks for i in keep):
            raise ValueError(f"keep={sorted(keep)} outside the {n_blocks + 1} states 0..{n_blocks} this forward returns")

        def state(i: int, x: torch.Tensor) -> torch.Tensor | None:  # (n, D) -> (B, T, D), if kept
            return layout.padded(x).view(B, T, -1) if keep is None or i in keep else None

        states = [state(0, x)]
        for i, block in enumerate(self.layers[:n_blocks], start=1):
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, mask, causal, layout, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, causal, layout)
            states.append(state(i, x))  # (B, T, D) or None
        if n_blocks == cfg.num_hidden_layers and states[-1] is not None:
            states[-1] = self.norm(states[-1])
        return tuple(states)

    def skips_padding(self, device: torch.device) -> bool:
        """Whether a padded batch's blocks compute on its real tokens only (`Layout`).

        `skip_padding` None (the default) decides: on the CPU, in eval mode. The CPU's time is
        arithmetic, so skipping pays in proportion to the padding (bench/results/cpu-skip-padding-*).
        Not in training mode: LoRA dropout draws a mask entry per input entry, so the packed layout
        would draw other masks from the same seed than every run recorded so far, and the study's
        configurations would stop sharing dropout draws (run.py check_same_budget). Not on a GPU
        yet: small models there wait on kernel launches, which the gather and scatters add to (seven
        a block), and each forward would wait for the host to count the real tokens; unmeasured.
        """
        if self.skip_padding is not None:
            return self.skip_padding
        return device.type == "cpu" and not self.training

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

    `mode` is torch.compile's: None (fusion only), "reduce-overhead" (CUDA graphs on a GPU, where
    the H100 benchmark found small models bound by kernel launches), "max-autotune", ...

    Inductor draws random numbers from its own generator, so compiled LoRA dropout would mask
    different units than eager and training would drift apart (measured: gradients differ by ~40%
    of their scale after one step). `fallback_random` makes compiled code use eager's generator:
    compiled and eager training then agree to float rounding. The flag is process-wide.
    """
    import torch._inductor.config as inductor_config

    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; known: {', '.join(COMPILE_MODES)}")
    inductor_config.fallback_random = True
    for block in model.layers:
        block.compile(mode=None if mode == "default" else mode)
    return model
