"""mltp against Hugging Face transformers (+ peft), side by side: same process, card, weights, batches.

    .venv/bin/python bench/bench.py --device cpu                      # SmolLM2 shape, fp32, encode + train
    python bench/bench.py --device cuda --out bench/results/h100     # all three shapes, bf16, goals
    .venv/bin/python bench/bench.py --device cpu --shapes tiny --baseline none   # no transformers needed

Shape legend: B batch, T padded tokens, D hidden size, L transformer blocks, S pooled blocks.

Per shape, both implementations run the same random weights (transformers builds the model, mltp's
Decoder takes the very same tensors with `assign=True`, so a 7B model is held once) and the same
left-padded batches of mixed lengths (uniform in [T/4, T], fixed seed). Two modes are timed:

- encode: every hidden state (no grad) + the MLTP pooler (`kind="mltp"`, all blocks, EOS token per
  block, paper M3). Both sides feed their hidden states to the SAME pooler object.
- train: one LoRA step (r=16, alpha=32, dropout 0.1 on q,k,v,o,gate,up,down; paper's setup):
  forward of a query and a positive batch, MLTP pooler, InfoNCE, backward, AdamW. mltp uses
  `mltp.lora.apply_lora`, transformers uses peft. Each side trains its own copy of the same pooler.
  Gradient checkpointing at the 7B shape on both sides.
- train-joint: the same step with queries and positives left-padded into ONE batch and one forward
  per side (what mltp's trainer does on a GPU: `mltp.train`, joint_forward). Both sides get it, so
  the ratio still compares implementations, not training loops.

Every row also counts the aten operators each side dispatches per call (forward, backward and
optimizer, counted once after timing): on a GPU each is at least one kernel launch, and at the small
shapes the launches, not the arithmetic, set the time. The `*-layout` shapes keep a real model's
depth and head layout at a width of 8 per head: run on the CPU they time that host-side cost alone.

Parity is asserted before anything is timed: every hidden state at the real tokens (relative error),
and the first training loss (LoRA B starts at 0, so the two adapters start as the same no-op).
Timed repetitions alternate mltp/transformers (order flipped every repetition) so both see the same
background load; the median is reported. transformers gets `position_ids` counted from the mask (what
mltp does, and what makes the two agree on left-padded rows) and `use_cache=False` (an encoder needs
no KV cache).

Memory is what one side would hold alone: its parameters + pooler + optimizer state
(the shared base weights counted for each side), plus the peak that torch.cuda.max_memory_allocated
sees above the allocation before one step (on the CPU: the peak of live tensor storage, `LiveBytes`). MFU = model FLOPs / time / the bf16 (CPU: fp32) matmul
peak measured in the same run; FLOPs are counted on the real tokens (see `forward_flops`).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
import traceback
import weakref
from functools import partial
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere: bench/ is not a package

from mltp.hygiene.atomic import atomic_write_stem  # noqa: E402
from mltp.config import ModelConfig, from_hf_config  # noqa: E402
from mltp.lora import LoRAConfig, apply_lora, lora_parameters  # noqa: E402
from mltp.loss import info_nce  # noqa: E402
from mltp import packed  # noqa: E402
from mltp.model import COMPILE_MODES, Decoder, compile_blocks  # noqa: E402
from mltp.layers import parse_layers  # noqa: E402
from mltp.pooling import PoolerConfig, build_pooler  # noqa: E402

# config.json-style dicts (random weights, nothing downloaded); values from the public configs.
SHAPES = {
    "tiny": dict(model_type="llama", vocab_size=256, hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=100000.0,
                         max_position_embeddings=8192),
    "qwen2-0.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                       num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       use_sliding_window=False, max_position_embeddings=32768),
    "mistral-7b": dict(model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=10000.0,
                       sliding_window=4096, max_position_embeddings=32768),
}


def layout_of(spec: dict, head_dim: int = 8) -> dict:
    """A real shape's depth and head layout at a tiny width: every operator, almost no arithmetic."""
    width = spec["num_attention_heads"] * head_dim
    return {**spec, "vocab_size": 256, "hidden_size": width, "intermediate_size": 2 * width}


SHAPES |= {f"{name.split('-')[0]}-layout": layout_of(SHAPES[name]) for name in ("smollm2-135m", "qwen2-0.5b")}
# Speed-up goals (mltp / transformers, both modes) and which shapes train with checkpointing.
GOALS = {"smollm2-135m": 1.5, "qwen2-0.5b": 1.5, "mistral-7b": 1.1}
CHECKPOINTED = {"mistral-7b"}
LORA = LoRAConfig(r=16, alpha=32, dropout=0.1)
# Relative error allowed between the two implementations' hidden states / first loss.
PARITY_TOL = {torch.float32: 1e-4, torch.float64: 1e-9, torch.bfloat16: 5e-2}


# ---- inputs ---------------------------------------------------------------------------------

def make_batch(B: int, T: int, vocab: int, g: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask (B, T') with lengths uniform in [T/4, T]; T' = the longest row."""
    lengths = torch.randint(max(1, T // 4), T + 1, (B,), generator=g)  # (B,)
    width = int(lengths.max())
    ids = torch.randint(1, vocab, (B, width), generator=g)  # 0 is the pad id
    mask = (torch.arange(width)[None, :] >= (width - lengths)[:, None]).long()  # (B, T'), left padding
    return ids.masked_fill(mask == 0, 0).to(device), mask.to(device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    # (B, T): count of real tokens so far, as mltp.model does; pads reuse 0.
    return (mask.cumsum(-1) - 1).clamp(min=0)


# ---- the two implementations ------------------------------------------------------------------

def build_pair(spec: dict, baseline: str, device, dtype, seed: int):
    """(mltp Decoder, transformers model or None, ModelConfig) holding the same weights."""
    torch.manual_seed(seed)
    if baseline == "none":
        cfg = from_hf_config(spec, source="bench shape")
        with torch.device(device):
            model = Decoder(cfg).to(dtype)
        return model.eval(), None, cfg

    import transformers

    hf_config = transformers.AutoConfig.for_model(**spec)
    with torch.device(device):  # initialised where it runs: a 7B model never visits host RAM
        hf = transformers.AutoModel.from_config(hf_config, dtype=dtype, attn_implementation="sdpa")
    hf = hf.to(device=device, dtype=dtype)  # a no-op unless from_config ignored the device or dtype
    cfg = from_hf_config(hf.config.to_dict(), source=f"transformers {type(hf).__name__}")
    with torch.device("meta"):
        model = Decoder(cfg)
    share_weights(model, hf)
    return model.eval(), hf.eval(), cfg


def share_weights(model: Decoder, hf) -> None:
    """Make mltp's parameters BE transformers' tensors (assign=True): one copy of the weights."""
    state = hf.state_dict()
    extra = [k for k in state if k not in model.state_dict() and "rotary_emb" not in k]
    if extra:
        raise ValueError(f"transformers {type(hf).__name__} has tensors mltp does not know: {extra[:5]}")
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=True, assign=True)


def mltp_states(model, ids, mask, keep=None, skip_padding="auto"):
    # Timed through the forward the embedder runs, with keep = the pooler's blocks, as
    # mltp.embedder.Embedder runs it (the states nobody reads are freed as the forward goes); parity
    # compares every state (keep=None). skip_padding auto: the embedder's choice (mltp.packed.packs_padding).
    skip = packed.packs_padding(model, ids.device) if skip_padding == "auto" else skip_padding == "on"
    if skip:
        return packed.forward(model, ids, mask, causal=True, keep=keep)
    return model(ids, mask, causal=True, keep=keep)


def hf_states(model, ids, mask):
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                output_hidden_states=True, use_cache=False)
    return out.hidden_states


def enable_checkpointing_hf(model) -> None:
    # transformers 5 renamed gradient_checkpointing_enable (kept as a deprecated alias).
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    enable = getattr(inner, "activation_checkpointing_enable", None) or inner.gradient_checkpointing_enable
    enable({"use_reentrant": False})  # what mltp's Decoder uses


def add_lora_hf(hf):
    import peft

    config = peft.LoraConfig(r=LORA.r, lora_alpha=LORA.alpha, lora_dropout=LORA.dropout,
                             target_modules=list(LORA.targets))
    return peft.get_peft_model(hf, config)


# ---- parity -----------------------------------------------------------------------------------

def states_rel_error(ours, ref, mask) -> float:
    """Max over hidden states of ||ours - ref|| / ||ref||, at the real tokens only (pads mean nothing)."""
    if len(ours) != len(ref):
        raise ValueError(f"{len(ours)} hidden states vs {len(ref)} in the reference")
    real = mask.bool()
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a.shape != b.shape:
            raise ValueError(f"hidden state {i}: shape {tuple(a.shape)} vs reference {tuple(b.shape)}")
        a, b = a[real].double(), b[real].double()  # (N real tokens, D)
        worst = max(worst, float((a - b).norm() / b.norm().clamp_min(1e-30)))
    return worst


def unpadded_reference(model, ids, mask):
    """The mltp-only reference: each row run alone without padding, laid back into the padded layout."""
    states = None
    for b in range(ids.shape[0]):
        real = mask[b].bool()
        alone = model(ids[b][real][None], causal=True)  # L+1 x (1, n, D)
        if states is None:
            states = [torch.zeros(*ids.shape, h.shape[-1], dtype=h.dtype, device=h.device) for h in alone]
        for s, h in zip(states, alone):
            s[b, real] = h[0]
    return states


def check_parity_low_precision(ours: float, theirs: float | None, what: str) -> None:
    """bf16: both sides against one fp32 reference; mltp may not be further from it than transformers.

    bf16 rounding compounds with depth, so two correct bf16 implementations drift apart as far
    from each other as from fp32 (the distances: bench/README.md, "Parity"). A fixed tolerance on their mutual distance cannot separate that from a bug; the distance of
    each to the fp32 result can. Slack: 25% + 0.01. Without transformers: at most 5e-2.
    """
    limit = PARITY_TOL[torch.bfloat16] if theirs is None else 1.25 * theirs + 0.01
    if not ours <= limit:  # also catches NaN
        raise AssertionError(f"parity failed: {what}: mltp is {ours:.3g} from the fp32 reference, more than {limit:.3g}"
                             + (f" (transformers: {theirs:.3g})" if theirs is not None else ""))


def check_parity(error: float, dtype, what: str) -> None:
    tol = PARITY_TOL[dtype]
    if not error <= tol:  # also catches NaN
        raise AssertionError(f"parity failed: {what} relative error {error:.3g} > {tol:g}")


# ---- FLOPs and timing -------------------------------------------------------------------------

def forward_flops(cfg: ModelConfig, lengths: list[int]) -> tuple[float, float]:
    """(matmul FLOPs of the linear layers, of causal attention) for one forward over real tokens.

    Linear: 2 FLOPs per weight per token (q,k,v,o + gate,up,down per block). Attention: QK^T and
    PV over the causal triangle, 2 * n^2 * H * Dh per block for a text of n tokens. The embedding
    lookup (no FLOPs), norms and RoPE are not counted; the pooler is counted by `pooler_flops`.
    """
    D, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    q_width, kv_width = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    weights_per_block = D * q_width + 2 * D * kv_width + q_width * D + 3 * D * F
    n_tokens = sum(lengths)
    linear = 2.0 * L * weights_per_block * n_tokens
    attention = 2.0 * L * q_width * sum(n * n for n in lengths)
    return linear, attention


def pooler_flops(pc: PoolerConfig, n_texts: int) -> float:
    """Matmul FLOPs of the MLTP pooler's forward: R latents read S per-block vectors per text."""
    D, R, inner, F = pc.hidden_size, pc.num_latents, pc.num_heads * pc.head_dim, pc.ff_mult * pc.hidden_size
    S = len(parse_layers(pc.layers, pc.num_layers))
    latents = 2 * R * (D * inner + inner * D + D * 2 * F + F * D)  # to_q, to_out, GEGLU in, out
    context = 2 * S * D * 2 * inner  # to_kv
    attention = 2 * 2 * R * S * inner  # scores and probs @ v
    return float(latents + context + attention) * n_texts


def train_flops(cfg: ModelConfig, lengths: list[int]) -> float:
    # The base is frozen: backward computes input gradients only (as many FLOPs as the forward for
    # the linear layers, twice the forward for attention: dQ, dK, dV, dP). Recompute under
    # checkpointing is not useful work and not counted (MFU, not hardware FLOPs utilisation).
    linear, attention = forward_flops(cfg, lengths)
    return 2 * linear + 3 * attention


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(fns: dict, warmup: int, steps: int, device) -> dict[str, float]:
    """Median seconds per call of each fn; repetitions alternate sides, order flipped each time."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    order = list(fns)
    for i in range(steps):
        for name in order if i % 2 == 0 else order[::-1]:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_peak(device, dtype, n: int | None = None, iters: int | None = None) -> float:
    """FLOP/s of a big square matmul loop: the denominator of MFU."""
    cuda = torch.device(device).type == "cuda"
    n = n or (8192 if cuda else 1024)
    iters = iters or (50 if cuda else 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    synchronize(device)
    return 2.0 * n ** 3 * iters / (time.perf_counter() - start)


def unique_bytes(tensors) -> int:
    # Shared storages (mltp's weights are transformers' tensors, tied embeddings) counted once.
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        key = (t.device, t.untyped_storage().data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def footprint(model, pooler, optimizer=None) -> int:
    tensors = list(model.parameters()) + list(model.buffers()) + list(pooler.parameters())
    if optimizer is not None:
        tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return unique_bytes(tensors)


class LiveBytes(TorchDispatchMode):
    """The peak bytes of tensor storage allocated inside the mode and still alive: a device-free
    stand-in for torch.cuda.max_memory_allocated, so a CPU run can compare the two sides' memory.

    A storage counts from the operator that creates it (one whose outputs alias none of its
    inputs: views and in-place operators create nothing) until it is freed (a weakref on the
    storage, as torch.distributed._tools.mem_tracker tracks them). What it does not see: allocator
    rounding and caching, and workspaces inside kernels; and CPU kernels are not CUDA's (CPU SDPA
    keeps the T x T attention weights that CUDA's fused kernels never write out)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.sizes: dict[int, int] = {}  # data_ptr -> bytes of each live storage counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in inputs or key in self.sizes:
                continue
            self.sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)


def peak_memory(fn, resident: int, device) -> int:
    """Bytes one side needs alone: what it keeps resident + the peak above the allocation before fn.

    On CUDA the allocator's peak; on the CPU the peak of live tensor storage (LiveBytes)."""
    if torch.device(device).type != "cuda":
        gc.collect()
        with LiveBytes() as live:
            fn()
        gc.collect()
        return resident + live.peak
    synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    synchronize(device)
    return resident + torch.cuda.max_memory_allocated() - before


# ---- one shape --------------------------------------------------------------------------------

def make_pooler(cfg: ModelConfig, device, layers: str = "all") -> torch.nn.Module:
    config = PoolerConfig(kind="mltp", hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
                          layers=layers, layer_token="eos",  # paper M3: causal model, EOS per block
                          head_dim=math.gcd(cfg.hidden_size, 64))  # 64, or what divides a layout shape's width
    return build_pooler(config).to(device)


def bench_shape(name: str, args, device, dtype, peak: float) -> list[dict]:
    spec = SHAPES[name]
    low_precision = dtype != torch.float32
    t0 = time.perf_counter()
    # In bf16 the weights are drawn in fp32 first, for the parity reference (check_parity_low_precision).
    model, hf, cfg = build_pair(spec, args.baseline, device, torch.float32 if low_precision else dtype, args.seed)
    progress(f"{name}: built in {time.perf_counter() - t0:.0f} s")
    g = torch.Generator().manual_seed(args.seed)
    encode_batch = make_batch(args.batch, args.seq, cfg.vocab_size, g, device)
    reference = None
    if low_precision and "encode" in args.modes:
        with torch.no_grad():
            ids, mask = encode_batch
            reference = hf_states(hf, ids, mask) if hf is not None else unpadded_reference(model, ids, mask)
    if low_precision:
        if hf is not None:
            hf.to(dtype)
            share_weights(model, hf)  # one copy again, now in dtype
        else:
            model.to(dtype)
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.compile:
        compile_blocks(model, args.compile)  # mltp's one switch: each block, in place
    q_batch = make_batch(args.batch, args.seq, cfg.vocab_size, g, device)
    p_batch = make_batch(args.batch, args.seq, cfg.vocab_size, g, device)
    torch.manual_seed(args.seed)
    pooler = make_pooler(cfg, device)
    sides = ({"mltp": (model, partial(mltp_states, keep=pooler.needs_layers, skip_padding=args.skip_padding))}
             | ({"transformers": (hf, hf_states)} if hf is not None else {}))
    rows = []

    if "encode" in args.modes:
        ids, mask = encode_batch
        with torch.no_grad():
            ours = mltp_states(model, ids, mask, skip_padding=args.skip_padding)
            ref = hf_states(hf, ids, mask) if hf is not None else unpadded_reference(model, ids, mask)
            error = states_rel_error(ours, ref, mask)
            emb_error = float((pooler(ours, mask) - pooler(ref, mask)).norm(dim=-1).max())
            parity = {"hidden_states_rel_error": error, "embedding_max_diff": emb_error}
            if reference is not None:
                parity["mltp_vs_fp32"] = states_rel_error(ours, reference, mask)
                parity["transformers_vs_fp32"] = states_rel_error(ref, reference, mask) if hf is not None else None
            del ours, ref, reference
        if low_precision:
            check_parity_low_precision(parity["mltp_vs_fp32"], parity["transformers_vs_fp32"], f"{name} encode hidden states")
        else:
            check_parity(error, dtype, f"{name} encode hidden states")
        progress(f"{name}: encode parity {fmt(parity)}")

        def encode(m, forward):
            new_step()
            with torch.no_grad():
                return pooler(forward(m, ids, mask), mask)

        fns = {side: (lambda m=m, f=f: encode(m, f)) for side, (m, f) in sides.items()}
        seconds = time_interleaved(fns, args.warmup, args.steps, device)
        lengths = mask.sum(1).tolist()
        flops = sum(forward_flops(cfg, lengths)) + pooler_flops(pooler.config, len(lengths))
        memory = {side: peak_memory(fns[side], footprint(m, pooler), device) for side, (m, _) in sides.items()}
        rows.append(result_row(name, "encode", sum(lengths), seconds, memory, flops, peak, parity, count_ops(fns)))
        progress(f"{name}: encode timed")

    if any(m.startswith("train") for m in args.modes):
        rows += bench_train(name, args, device, dtype, peak, model, hf, cfg, pooler, q_batch, p_batch)
    return rows


def new_step() -> None:
    # Under --compile reduce-overhead (CUDA graphs) the outputs of one repetition live in memory the
    # next replay reuses: mark where a repetition starts. A no-op for eager code.
    torch.compiler.cudagraph_mark_step_begin()


def progress(message: str) -> None:
    # To stderr as it happens: a run cut off by a time limit still shows how far it got.
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def join_left_padded(batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (ids, mask) batches -> one batch padded on the left to the widest: (sum B, T)."""
    width = max(ids.shape[1] for ids, _ in batches)
    pad = torch.nn.functional.pad
    ids = torch.cat([pad(ids, (width - ids.shape[1], 0)) for ids, _ in batches])  # pad id 0, as make_batch
    mask = torch.cat([pad(mask, (width - mask.shape[1], 0)) for _, mask in batches])
    return ids, mask


def bench_train(name, args, device, dtype, peak, model, hf, cfg, pooler, q_batch, p_batch) -> list[dict]:
    checkpointed = {"on": True, "off": False, "auto": name in CHECKPOINTED}[args.checkpointing]
    apply_lora(model, LORA)
    model.gradient_checkpointing = checkpointed
    model.train()
    sides = {"mltp": (model, partial(mltp_states, keep=pooler.needs_layers, skip_padding=args.skip_padding))}
    if hf is not None:
        hf = add_lora_hf(hf)
        if checkpointed:
            enable_checkpointing_hf(hf)
        hf.train()
        sides["transformers"] = (hf, hf_states)
    joint_batch = join_left_padded([q_batch, p_batch])
    B = q_batch[0].shape[0]
    rows = []
    for mode in [m for m in args.modes if m.startswith("train")]:
        steps = {}
        for side, (m, forward) in sides.items():
            with torch.no_grad():  # every mode starts from the no-op adapter (B = 0), as the first one did
                for param_name, param in m.named_parameters():
                    if "lora_B" in param_name:
                        param.zero_()
            side_pooler = copy.deepcopy(pooler).train()  # each side trains its own copy of one init
            trainable = [p for p in m.parameters() if p.requires_grad] + list(side_pooler.parameters())
            if side == "mltp" and len(trainable) != len(lora_parameters(m)) + len(list(side_pooler.parameters())):
                raise AssertionError("apply_lora left base parameters trainable")
            # foreach: the multi-tensor AdamW, what torch picks on a GPU (on a CPU it loops per tensor)
            optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01, foreach=True)

            def step(m=m, forward=forward, side_pooler=side_pooler, optimizer=optimizer, joint=mode == "train-joint"):
                new_step()
                if joint:  # one forward over queries and positives together, split after pooling
                    q, p = side_pooler(forward(m, *joint_batch), joint_batch[1]).split(B)  # 2 x (B, D)
                else:
                    q = side_pooler(forward(m, *q_batch), q_batch[1])  # (B, D)
                    p = side_pooler(forward(m, *p_batch), p_batch[1])  # (B, D)
                loss = info_nce(q, p)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return loss.detach()

            steps[side] = (step, m, side_pooler, optimizer)

        # First step from the identical start (LoRA B = 0): both losses must agree.
        first = {side: float(s[0]()) for side, s in steps.items()}
        if not all(torch.isfinite(torch.tensor(v)) for v in first.values()):
            raise AssertionError(f"parity failed: {name} {mode} first training loss not finite: {first}")
        loss_error = 0.0
        if hf is not None:
            loss_error = abs(first["mltp"] - first["transformers"]) / abs(first["transformers"])
            check_parity(loss_error, dtype, f"{name} {mode} first training loss")

        fns = {side: s[0] for side, s in steps.items()}
        seconds = time_interleaved(fns, args.warmup, args.steps, device)
        memory = {side: peak_memory(step, footprint(m, sp, opt), device) for side, (step, m, sp, opt) in steps.items()}
        lengths = q_batch[1].sum(1).tolist() + p_batch[1].sum(1).tolist()
        # The pooler trains fully: forward + input gradients + weight gradients = 3 x its forward.
        flops = train_flops(cfg, lengths) + 3 * pooler_flops(pooler.config, len(lengths))
        rows.append(result_row(name, mode, sum(lengths), seconds, memory, flops, peak,
                               {"first_loss": first, "first_loss_rel_error": loss_error,
                                "gradient_checkpointing": checkpointed}, count_ops(fns)))
        progress(f"{name}: {mode} timed")
    return rows


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched below autograd (backward's included), and of those the
    ones that compute: a view (transpose, reshape of a contiguous tensor...) costs host time but
    launches no kernel."""

    def __init__(self):
        super().__init__()
        self.ops = self.computing = 0

    # Not views by schema, but they launch no kernel either: a reshape's alias, bare allocations.
    NO_KERNEL = {"aten._unsafe_view", "aten.empty_like", "aten.empty", "aten.new_empty", "aten.empty_strided"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.computing += not (getattr(func, "is_view", False) or str(func.overloadpacket) in self.NO_KERNEL)
        return func(*args, **(kwargs or {}))


def count_ops(fns: dict) -> dict[str, dict[str, int]]:
    """{side: {"ops": all dispatched, "computing": non-view}} for one extra, untimed call each."""
    counts = {}
    for side, fn in fns.items():
        with OpCounter() as counter:
            fn()
        counts[side] = {"ops": counter.ops, "computing": counter.computing}
    return counts


def result_row(shape, mode, tokens, seconds, memory, flops, peak, parity, ops) -> dict:
    row = {"shape": shape, "mode": mode, "real_tokens": tokens, "parity": parity,
           "seconds": seconds, "tokens_per_s": {s: tokens / t for s, t in seconds.items()},
           "memory_bytes": memory, "mfu": {s: flops / t / peak for s, t in seconds.items()}, "ops": ops}
    if "transformers" in seconds:
        row["ratio"] = seconds["transformers"] / seconds["mltp"]
    return row


# ---- report -----------------------------------------------------------------------------------

def goals(rows: list[dict]) -> list[tuple[str, bool]]:
    checks = []
    for row in rows:
        if row["shape"] in GOALS and "ratio" in row:
            need = GOALS[row["shape"]]
            checks.append((f"{row['shape']} {row['mode']}: speed-up {row['ratio']:.2f}x >= {need}x", row["ratio"] >= need))
            mem = row["memory_bytes"]
            if mem.get("mltp") is not None and mem.get("transformers") is not None:
                checks.append((f"{row['shape']} {row['mode']}: memory {gib(mem['mltp'])} <= {gib(mem['transformers'])}",
                               mem["mltp"] <= mem["transformers"]))
    return checks


def cpu_goal(rows: list[dict]) -> list[tuple[str, bool]]:
    # The project's CPU requirement: the encode path not slower than transformers'. And the memory
    # goal as the CPU can judge it: live tensor bytes (LiveBytes), not CUDA's allocator.
    checks = [(f"{r['shape']} encode on CPU: {r['ratio']:.2f}x, not slower than transformers", r["ratio"] >= 1.0)
              for r in rows if r["mode"] == "encode" and "ratio" in r]
    for r in rows:
        mem = r["memory_bytes"]
        if mem.get("mltp") is not None and mem.get("transformers") is not None:
            checks.append((f"{r['shape']} {r['mode']}: live tensor memory {mib(mem['mltp'])} <= {mib(mem['transformers'])}",
                           mem["mltp"] <= mem["transformers"]))
    return checks


def fmt(value) -> str:
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {fmt(v)}" for k, v in value.items()) + ")"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def gib(n) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def mib(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def table(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"# mltp vs transformers ({meta['date']})",
        "",
        f"- device: {meta['device']} ({meta['dtype']}), {meta['threads']}",
        f"- torch {meta['torch']}, transformers {meta['transformers']}, peft {meta['peft']}, python {meta['python']}",
        f"- batch {meta['batch']} x seq <= {meta['seq']} (left-padded, lengths uniform in [T/4, T]), "
        f"warm-up {meta['warmup']}, timed {meta['steps']} (median, sides interleaved), compile={meta['compile']}, "
        f"checkpointing={meta['checkpointing']}, mltp skip_padding={meta.get('skip_padding', 'auto')}",
        f"- matmul peak (MFU denominator): {meta['matmul_peak_tflops']:.3f} TFLOP/s; load average before/after: "
        f"{meta['load_before']} / {meta['load_after']}",
        f"- command: `{meta['command']}`",
        "",
        "| shape | mode | mltp tok/s | transformers tok/s | ratio | mltp mem | hf mem | MFU mltp / hf | computing ops mltp / hf |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tps, mem, mfu = r["tokens_per_s"], r["memory_bytes"], r["mfu"]
        hf = "transformers" in tps
        lines.append(
            f"| {r['shape']} | {r['mode']} | {tps['mltp']:.0f} | {tps['transformers']:.0f} | {r['ratio']:.2f}x "
            if hf else f"| {r['shape']} | {r['mode']} | {tps['mltp']:.0f} | - | - "
        )
        lines[-1] += (f"| {gib(mem.get('mltp'))} | {gib(mem.get('transformers'))} | "
                      f"{100 * mfu['mltp']:.1f}% / {(100 * mfu['transformers']) if hf else float('nan'):.1f}% | "
                      f"{r['ops']['mltp']['computing']} / {r['ops'].get('transformers', {}).get('computing', '-')} |")
    lines.append("")
    against = "transformers" if meta["baseline"] == "transformers" else "the same texts run unpadded"
    for r in rows:
        facts = ", ".join(f"{k} {fmt(v)}" for k, v in r["parity"].items())
        lines.append(f"- parity {r['shape']} {r['mode']} (against {against}): {facts}")
    for name, error in meta.get("errors", {}).items():
        lines.append(f"- FAILED {name}: {error}")
    if meta.get("unfinished"):
        lines.append(f"- PARTIAL: written before {', '.join(meta['unfinished'])} ran; a run cut short stops here")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    for pkg in ("transformers", "peft"):
        try:  # the installed version, read without importing the (slow to import) package
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ---- entry point ------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", default=None, help=f"comma list of {list(SHAPES)}; default: cpu smollm2-135m, cuda the three real shapes")
    p.add_argument("--modes", default="encode,train", help="comma list of encode, train, train-joint")
    p.add_argument("--batch", type=int, default=None, help="texts per batch (default cpu 4, cuda 32)")
    p.add_argument("--seq", type=int, default=256, help="T: longest text; lengths are uniform in [T/4, T]")
    p.add_argument("--steps", type=int, default=None, help="timed repetitions per side (default cpu 5, cuda 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repetitions per side (default cpu 1, cuda 5)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: cpu fp32, cuda bf16")
    p.add_argument("--compile", nargs="?", const="default", metavar="MODE", choices=COMPILE_MODES,
                   help="torch.compile every mltp decoder block (mltp.model.compile_blocks); MODE as torch.compile's")
    p.add_argument("--baseline", choices=["transformers", "none"], default="transformers",
                   help="none: time mltp alone, parity against unpadded runs (needs no transformers)")
    p.add_argument("--skip-padding", choices=["auto", "on", "off"], default="auto",
                   help="mltp's blocks compute on the real tokens only (mltp.packed); auto: the embedder's choice "
                        "(mltp.packed.packs_padding), on the CPU only, in training too, unless compiled")
    p.add_argument("--checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="gradient checkpointing in train mode, both sides; auto: on at the 7B shape only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="path stem: writes STEM.json and STEM.md")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    args.shapes = (args.shapes or ("smollm2-135m,qwen2-0.5b,mistral-7b" if cuda else "smollm2-135m")).split(",")
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {unknown}; known: {list(SHAPES)}")
    args.modes = args.modes.split(",")
    if not set(args.modes) <= {"encode", "train", "train-joint"} or not args.modes:
        p.error(f"--modes must be a comma list of encode, train, train-joint; got {args.modes}")
    args.batch = args.batch or (32 if cuda else 4)
    args.steps = args.steps or (20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    if min(args.batch, args.seq, args.steps) < 1:
        p.error("--batch, --seq and --steps must be positive")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": f"{torch.get_num_threads()} torch threads",
        "dtype": args.dtype, "batch": args.batch, "seq": args.seq, "steps": args.steps, "warmup": args.warmup,
        "compile": args.compile, "checkpointing": args.checkpointing, "skip_padding": args.skip_padding, "baseline": args.baseline, "shapes": args.shapes, "modes": args.modes,
        "command": " ".join(["python bench/bench.py"] + (sys.argv[1:] if argv is None else list(argv))),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        **versions(),
    }
    peak = matmul_peak(device, dtype)
    meta["matmul_peak_tflops"] = peak / 1e12
    rows, errors = [], {}
    for i, name in enumerate(args.shapes):
        # One shape failing (parity, out of memory) must not cost the others their numbers.
        try:
            rows += bench_shape(name, args, device, dtype, peak)
        except Exception as e:  # noqa: BLE001 - reported in the table and as a failed goal
            traceback.print_exc()
            errors[name] = f"{type(e).__name__}: {e}"
        if cuda:
            torch.cuda.empty_cache()
        if args.out and i + 1 < len(args.shapes):
            # The table so far, on disk after every shape: a run cut short by a timeout (a device
            # call has a hard limit; the 7B shape is the slow one) keeps the shapes it finished.
            report(args, meta, rows, errors, cuda, unfinished=args.shapes[i + 1:])
    return report(args, meta, rows, errors, cuda, unfinished=[], show=True)


def report(args, meta: dict, rows: list[dict], errors: dict, cuda: bool, unfinished: list[str], show: bool = False) -> dict:
    """The table, the goals and the JSON of the rows so far; written to --out when given."""
    meta = {**meta, "load_after": [round(x, 2) for x in os.getloadavg()], "errors": errors, "unfinished": unfinished}
    text = table(meta, rows)
    checks = ((goals(rows) if cuda else cpu_goal(rows)) + [(f"{n}: did not finish ({e})", False) for n, e in errors.items()]
              + [(f"{n}: not run yet", False) for n in unfinished])
    if checks:
        text += "\n" + "\n".join(f"- {'PASS' if ok else 'FAIL'}: {what}" for what, ok in checks) + "\n"
    if show:
        print(text)
    result = {"meta": meta, "rows": rows, "goals": [{"goal": w, "pass": ok} for w, ok in checks], "table": text}
    if args.out:
        atomic_write_stem(args.out, result, text)
    return result


if __name__ == "__main__":
    main()
