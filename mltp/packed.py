"""The decoder's forward over the real tokens only: what the embedder runs on a CPU.

On a CPU time is arithmetic, and padding is arithmetic spent on nothing: nearly all of a forward's
work is in the projections and MLPs, which act on each token alone. So this forward packs the
tokens of a padded batch (B, T) into (n, D), n real tokens, runs every projection and MLP on them,
and unpacks q, k and v into the padded grid for attention only (SDPA wants (B, H, T, Dh)). It
reads the very modules `Decoder.forward` reads (model.layers[i].self_attn.q_proj ...) and returns
the same states, with zeros at the pads (tests/test_model.py holds both to transformers' numbers).
The gain and where it was measured: bench/README.md, "Skipping the padding on the CPU".

Beside the packing, each for the reason given where it is done:
- LoRA dropout draws its mask for the padded (B*T, I) grid and keeps the real tokens' rows
  (`Packing.linear`), so a seed trains on the same masks with or without packing;
- RoPE as a roll with the sign folded into the sin table (`rolled_rope`), fewer operators;
- the SwiGLU product in place when autograd is off, one (n, F) buffer fewer at the encode peak.
A compiled model runs `Decoder.forward` instead (`packs_padding`): the packed shape changes with
every batch, and the compiled blocks are the textbook's.

Shape legend as mltp/model.py; n real tokens of the (B, T) grid.
"""
from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F

from .lora import LoRALinear
from .model import (MLP, Attention, Block, Decoder, attention_bias, check_batch, check_range, positions_from_mask,
                    rope_tables)


def packs_padding(model: Decoder, device: torch.device) -> bool:
    """On a CPU, unless the blocks are compiled. Not on a GPU: there small models wait on kernel
    launches, which packing adds (seven a block), and counting the real tokens makes each forward
    wait for the host (bench/README.md)."""
    return device.type == "cpu" and model.compiled is None


class Packing:
    """Where the n computed tokens sit in the (B, T) grid: `rows` (n,), flat indices into B*T."""

    def __init__(self, B: int, T: int, rows: torch.Tensor | None = None):
        self.B, self.T, self.rows = B, T, rows  # rows None: no padding, all B*T tokens

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        # (B*T, ...) -> (n, ...)
        return x if self.rows is None else x.index_select(0, self.rows)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        # (n, ...) -> (B*T, ...), zeros at the pads
        if self.rows is None:
            return x
        return x.new_zeros(self.B * self.T, *x.shape[1:]).index_copy_(0, self.rows, x)

    def linear(self, layer, x: torch.Tensor) -> torch.Tensor:
        # (n, I) -> (n, O). A LoRA layer that drops out draws its mask for the whole (B*T, I) grid,
        # as the padded forward does, and applies that mask's real-token rows: the same random
        # numbers, in the same order, so a seed's masks do not depend on the padding skipped.
        if self.rows is None or not isinstance(layer, LoRALinear) or not layer.drops_out:
            return layer(x)
        noise = layer.lora_dropout(x.new_ones(self.B * self.T, x.shape[1]))  # (B*T, I): 0 or 1/(1-p)
        return layer(x, dropped=x * self.pack(noise))


def signed_sin_table(sin: torch.Tensor) -> torch.Tensor:
    # rotate_half(x) * sin = roll(x, Dh/2) * [-sin | +sin]: the sign, built once a forward.
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def rolled_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    # mltp.model.apply_rope, x (n, H, Dh): roll gives [x2, x1], the table's sign makes it [-x2, x1].
    # addcmul rounds once where the textbook rounds the product and the sum apart (bf16: <= 1 ulp).
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


def attention(attn: Attention, x, cos, signed_sin, mask, causal: bool, packing: Packing) -> torch.Tensor:
    # Attention.forward's math on packed tokens: x (n, D), cos / signed_sin (n, 1, Dh) -> (n, D).
    n, B, T, H, K, Dh = x.shape[0], packing.B, packing.T, attn.n_heads, attn.n_kv, attn.head_dim
    q = rolled_rope(packing.linear(attn.q_proj, x).view(n, H, Dh), cos, signed_sin)  # (n, H, Dh)
    k = rolled_rope(packing.linear(attn.k_proj, x).view(n, K, Dh), cos, signed_sin)  # (n, K, Dh)
    v = packing.linear(attn.v_proj, x).view(n, K, Dh)  # (n, K, Dh)
    q, k, v = (packing.unpack(t).view(B, T, -1, Dh).transpose(1, 2) for t in (q, k, v))  # (B, H|K, T, Dh)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, enable_gqa=K != H)
    out = packing.pack(out.transpose(1, 2).reshape(B * T, H * Dh))  # (B, H, T, Dh) -> (n, H*Dh)
    return packing.linear(attn.o_proj, out)  # (n, D)


def mlp(m: MLP, x: torch.Tensor, packing: Packing) -> torch.Tensor:
    # MLP.forward's math: x (n, D) -> (n, D)
    gate, up = packing.linear(m.gate_proj, x), packing.linear(m.up_proj, x)  # (n, F) each
    if torch.is_grad_enabled():
        return packing.linear(m.down_proj, F.silu(gate) * up)  # autograd keeps gate and up for backward
    return packing.linear(m.down_proj, F.silu(gate, inplace=True).mul_(up))  # no third (n, F) buffer


def block_forward(block: Block, x, cos, signed_sin, mask, causal: bool, packing: Packing) -> torch.Tensor:
    # Block.forward on packed tokens: x (n, D) -> (n, D)
    x = x + attention(block.self_attn, block.input_layernorm(x), cos, signed_sin, mask, causal, packing)
    return x + mlp(block.mlp, block.post_attention_layernorm(x), packing)


def forward(model: Decoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, causal: bool = True,
            upto: int | None = None, keep: Collection[int] | None = None) -> tuple[torch.Tensor | None, ...]:
    """`Decoder.forward`'s states (same arguments, same contract) with zeros at the pad positions."""
    cfg = model.config
    B, T = input_ids.shape
    device = input_ids.device
    n_blocks = check_range(cfg, upto, keep)
    window = check_batch(cfg, input_ids, attention_mask, causal)
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # no padding: no mask, SDPA's own causal kernel
    rows = None if attention_mask is None else attention_mask.flatten().nonzero().flatten()  # (n,) the real tokens
    packing = Packing(B, T, rows)
    x = model.embed_tokens(packing.pack(input_ids.reshape(B * T)))  # (n, D)
    positions = packing.pack(positions_from_mask(attention_mask, B, T, device).reshape(B * T))  # (n,)
    cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, x.dtype)  # (n, Dh)
    cos, sin = cos[:, None], signed_sin_table(sin)[:, None]  # (n, 1, Dh): heads broadcast
    mask = attention_bias(attention_mask, T, causal, window, x)  # (B|1, 1, T, T) or None

    def state(i: int, x: torch.Tensor) -> torch.Tensor | None:  # (n, D) -> (B, T, D), if kept
        return packing.unpack(x).view(B, T, -1) if keep is None or i in keep else None

    states = [state(0, x)]
    for i, block in enumerate(model.layers[:n_blocks], start=1):
        x = model.run_block(block_forward, block, x, cos, sin, mask, causal, packing)
        states.append(state(i, x))
    if n_blocks == cfg.num_hidden_layers and states[-1] is not None:
        states[-1] = model.norm(states[-1])
    return tuple(states)
