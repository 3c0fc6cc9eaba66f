"""The cross-attention block of the trainable poolers (Perceiver-style: trainable and MLTP).

Shape legend: B batch, Q queries, K keys (context rows), D model width, H heads, E head width,
F = ff_mult * D (the GEGLU width).

One pre-norm cross-attention step followed by a pre-norm GEGLU feed-forward, both residual:

    x = queries + to_out( softmax( to_q(LN_q(queries)) . to_k(LN_c(context))^T / sqrt(E) ) . to_v(LN_c(context)) )
    x = x + ff_out( value * gelu(gate) ),   [value | gate] = ff_in(LN_ff(x))

This is lucidrains' Perceiver block as the official code uses it (yixuantt/PoolingAndAttn
pooling_layers/MultiLayersTrainablePooling.py): q/kv/out projections without bias, k and v from
one `to_kv` (k first), heads packed head-major in the inner width, feed-forward Linear(D, 2F) ->
GEGLU (value first, gate second, exact gelu) -> Linear(F, D) with bias. The learned latents are
the queries, the per-block vectors (MLTP) or the tokens of one block (trainable) the context.
The upstream PreNorm names its two norms the other way round (`norm` for the context,
`norm_context` for the queries); here each is named by what it normalises.

Deviations: an optional key mask (the official M4 forgot the padding mask; we apply it), and
LayerNorm + softmax computed in fp32 whatever the autocast dtype, so bf16 cannot flatten them.
The attention is written out rather than calling F.scaled_dot_product_attention: Q and K are
small here (hundreds), and the fp32 softmax and the mask stay visible.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def upcast(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32; fp32 and fp64 pass unchanged (tests run the math in fp64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def layer_norm_fp32(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    # Parameters and input upcast together, so a bf16-cast module still normalises in fp32.
    return F.layer_norm(upcast(x), norm.normalized_shape, upcast(norm.weight), upcast(norm.bias), norm.eps)


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int, ff_mult: int):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, 2 * ff_mult * dim)
        self.ff_out = nn.Linear(ff_mult * dim, dim)
        # A list to switch recording on (run.py probe --pooler): each forward appends the share of
        # attention each context row got, averaged over heads and queries, (B, K) on the CPU.
        self.record: list[torch.Tensor] | None = None

    def forward(
        self, queries: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # queries (B, Q, D), context (B, K, D), context_mask (B, K) bool, True = attend -> (B, Q, D)
        attended = self.attend(layer_norm_fp32(self.norm_query, queries), layer_norm_fp32(self.norm_context, context), context_mask)
        x = upcast(queries) + upcast(attended)
        return x + upcast(self.feed_forward(layer_norm_fp32(self.norm_ff, x)))

    def attend(self, queries: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        B, Q, _ = queries.shape
        K = context.shape[1]
        H, E = self.num_heads, self.head_dim
        q = self.to_q(queries).view(B, Q, H, E).transpose(1, 2)  # (B, H, Q, E)
        k, v = self.to_kv(context).chunk(2, dim=-1)  # 2 x (B, K, H*E), k first as upstream
        k = k.view(B, K, H, E).transpose(1, 2)  # (B, H, K, E)
        v = v.view(B, K, H, E).transpose(1, 2)  # (B, H, K, E)
        scores = upcast(q @ k.transpose(-1, -2)) / math.sqrt(E)  # (B, H, Q, K), fp32 from here
        if context_mask is not None:
            scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1)  # (B, H, Q, K)
        if self.record is not None:
            self.record.append(probs.detach().mean(dim=(1, 2)).cpu())  # (B, K), rows sum to 1
        out = probs.to(v.dtype) @ v  # (B, H, Q, E)
        out = out.transpose(1, 2).reshape(B, Q, H * E)  # (B, Q, H*E), heads packed head-major
        return self.to_out(out)  # (B, Q, D)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.ff_in(x).chunk(2, dim=-1)  # 2 x (B, Q, F): GEGLU, value first
        return self.ff_out(value * F.gelu(gate))  # (B, Q, D)
