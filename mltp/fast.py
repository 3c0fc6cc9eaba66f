"""The decoder's forward, tuned: the modules of mltp/model.py, run with every speed measure.

Same parameters, same math (LoRA layers included); tests/test_model.py holds this forward equal to
the plain one and to transformers. `forward` is what the embedder encodes and trains through;
`Decoder.forward` stays the textbook. The measures, each with its reason and where it was measured:

1. Only the real tokens (`skip_padding`): the projections and MLPs, nearly all of a forward's
   arithmetic, skip the padding; q, k, v go into the padded (B, T) grid for attention only.
   In training each LoRA layer still draws its dropout mask for the padded grid and keeps the real
   tokens' rows (`FastPath.linear`), so a seed trains on the same masks either way. Pays where
   time is arithmetic, on the CPU (bench/results/cpu-skip-padding-smollm2-135m.md against
   cpu-padded-smollm2-135m.md; training: cpu-train-skip-padding.md). Off on a GPU: see
   `skip_padding_by_default`.
2. Only the blocks and states a pooler reads (`upto`, `keep`): a pooler over the middle blocks
   pays for neither the top blocks nor the states it ignores (bench/results/cpu-encode-peak-layers.md).
3. Tokens flat, (n, D), through the projections: F.linear on a 2-D input is one matmul call, on
   3-D it adds two views a call, host time on a launch-bound GPU (bench/README.md, operator counts).
4. RoPE as a roll with the sign folded into the sin table: three operators a tensor instead of
   rotate_half's five (bench/README.md, operator counts).
5. The padding mask as SDPA's additive bias, built once a forward in the dtype SDPA computes in
   (under autocast, the autocast dtype), instead of SDPA converting a boolean mask in every block
   (bench/README.md, operator counts).
6. No mask at all for a batch without padding: SDPA's own causal kernel.
7. The SwiGLU product in place when autograd is off: one (n, F) buffer fewer at the encode memory
   peak (bench/results/cpu-encode-peak.md).
Plus `compile_blocks`, the one torch.compile switch.
"""
from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F

from .lora import LoRALinear
from .model import Decoder, attention_mask_4d, check_batch, positions_from_mask, rope_tables

# torch.compile's modes, as run.py and bench.py offer them ("default" = torch.compile's mode=None).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def skip_padding_by_default(device: torch.device, training: bool) -> bool:
    """On for a CPU model, where time is arithmetic; in training too, with the padded grid's
    dropout masks (`FastPath.linear`).

    Not on a GPU: there small models wait on kernel launches, which the packing adds (seven a
    block), and counting the real tokens makes each forward wait for the host.
    """
    return device.type == "cpu"


class FastPath:
    """What the tuned forward hands to every block: where its n computed tokens sit in (B, T).

    `rows` (n,) are the flat indices into B*T of the real tokens; None computes all B*T.
    """

    def __init__(self, B: int, T: int, rows: torch.Tensor | None = None):
        self.B, self.T, self.rows = B, T, rows

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

    def attention(self, attn, x, cos, signed_sin, mask, causal: bool):
        # Attention.forward's math on flat tokens: x (n, D), cos / signed_sin (n, 1, Dh).
        n, B, T, H, K, Dh = x.shape[0], self.B, self.T, attn.n_heads, attn.n_kv, attn.head_dim
        q = rolled_rope(self.linear(attn.q_proj, x).view(n, H, Dh), cos, signed_sin)  # (n, H, Dh)
        k = rolled_rope(self.linear(attn.k_proj, x).view(n, K, Dh), cos, signed_sin)  # (n, K, Dh)
        v = self.linear(attn.v_proj, x).view(n, K, Dh)  # (n, K, Dh)
        q, k, v = (self.unpack(t).view(B, T, -1, Dh).transpose(1, 2) for t in (q, k, v))  # (B, H|K, T, Dh)
        # enable_gqa rather than expanding K/V to H heads: expanding was slower with a mask too
        # (bench/results/sdpa-gqa-h100.md).
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, enable_gqa=K != H)
        out = self.pack(out.transpose(1, 2).reshape(B * T, H * Dh))  # (B, H, T, Dh) -> (n, H*Dh)
        return self.linear(attn.o_proj, out)  # (n, D)

    def mlp(self, mlp, x):
        # MLP.forward's math: x (n, D) -> (n, D)
        gate, up = self.linear(mlp.gate_proj, x), self.linear(mlp.up_proj, x)  # (n, F) each
        if torch.is_grad_enabled():
            return self.linear(mlp.down_proj, F.silu(gate) * up)  # autograd keeps gate and up for backward
        return self.linear(mlp.down_proj, F.silu(gate, inplace=True).mul_(up))  # no third (n, F) buffer


def signed_sin_table(sin: torch.Tensor) -> torch.Tensor:
    # rotate_half(x) * sin = roll(x, Dh/2) * [-sin | +sin]: the sign, built once a forward.
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def rolled_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    # mltp.model.apply_rope, x (n, H, Dh): roll gives [x2, x1], the table's sign makes it [-x2, x1].
    # addcmul rounds once where the textbook rounds the product and the sum apart (bf16: <= 1 ulp).
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The boolean mask as SDPA's additive bias: 0 where allowed, -inf elsewhere; (B or 1, 1, T, T).

    Rows are laid out with a stride rounded up to 16 elements, the alignment the memory-efficient
    CUDA kernel wants for its bias (it copies a misaligned one per call); the view shows T columns.
    """
    *lead, T_q, T_k = allowed.shape
    stride = -(-T_k // 16) * 16
    bias = torch.empty(*lead, T_q, stride, dtype=dtype, device=allowed.device)[..., :T_k]  # (.., T, T) view
    return bias.copy_(torch.zeros((), dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf")))


def forward(
    model: Decoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    causal: bool = True,
    upto: int | None = None,
    keep: Collection[int] | None = None,
    skip_padding: bool = False,
) -> tuple[torch.Tensor | None, ...]:
    """`Decoder.forward`'s states, tuned; pad positions are zeros when `skip_padding`.

    `upto=n` runs only blocks 1..n and returns n+1 states; the final norm applies only when n == L.
    `keep` (default: all) names the indices to return; the others are None, and a state nobody
    keeps is freed once the next block has read it (the pooler contract allows None: mltp.pooling).
    """
    cfg = model.config
    B, T = input_ids.shape
    device = input_ids.device
    n_blocks = cfg.num_hidden_layers if upto is None else upto
    if not 0 <= n_blocks <= cfg.num_hidden_layers:
        raise ValueError(f"upto={upto} outside 0..{cfg.num_hidden_layers}")
    if keep is not None and not all(0 <= i <= n_blocks for i in keep):
        raise ValueError(f"keep={sorted(keep)} outside the {n_blocks + 1} states 0..{n_blocks} this forward returns")
    window = check_batch(cfg, input_ids, attention_mask, causal)
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # (6) no padding
    rows = None
    if skip_padding and attention_mask is not None:
        rows = attention_mask.flatten().nonzero().flatten()  # (1) (n,) the real tokens
    fast = FastPath(B, T, rows)
    x = model.embed_tokens(fast.pack(input_ids.reshape(B * T)))  # (3) (n, D)
    positions = fast.pack(positions_from_mask(attention_mask, B, T, device).reshape(B * T))  # (n,)
    cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, x.dtype)  # (n, Dh)
    cos, sin = cos[:, None], signed_sin_table(sin)[:, None]  # (4) (n, 1, Dh): heads broadcast
    mask = attention_mask_4d(attention_mask, T, causal, window, device)
    if mask is not None:  # (5) in the dtype SDPA will see: under autocast, the autocast dtype
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else x.dtype
        mask = additive_mask(mask, dtype)

    def state(i: int, x: torch.Tensor) -> torch.Tensor | None:  # (2) (n, D) -> (B, T, D), if kept
        return fast.unpack(x).view(B, T, -1) if keep is None or i in keep else None

    states = [state(0, x)]
    for i, block in enumerate(model.layers[:n_blocks], start=1):
        x = model.run_block(block, x, cos, sin, mask, causal, fast)
        states.append(state(i, x))
    if n_blocks == cfg.num_hidden_layers and states[-1] is not None:
        states[-1] = model.norm(states[-1])
    return tuple(states)


def compile_blocks(model: Decoder, mode: str | None = None) -> Decoder:
    """torch.compile every block in place: the one compile switch (run.py --compile [MODE]).

    `mode` is torch.compile's: None (fusion only), "reduce-overhead" (CUDA graphs on a GPU), ...
    Each block's compiled code draws random numbers from eager's generator (inductor's
    `fallback_random`, set for these blocks only, not process-wide): inductor's own generator
    would give LoRA dropout other masks than eager, and compiled training would drift from it.
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
    return model
