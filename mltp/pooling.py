"""Pooling heads: every hidden state of the decoder -> one L2-normalised vector per text.

Shape legend:
    B batch, T tokens, D hidden size, L transformer blocks of the model, S selected blocks,
    R learned latents (Perceiver queries).

Contract of every pooler: `pooler(hidden_states, attention_mask) -> (B, D)`, unit L2 norm, fp32
(fp64 in, fp64 out). `hidden_states` follows Hugging Face `output_hidden_states`: L+1 tensors of
(B, T, D), index 0 the embedding output, index i the output of block i, index L after the final
RMSNorm. Only the indices in `pooler.needs_layers` are read (others may be None, or the tuple may
stop after its largest index), so the model can drop the rest. `attention_mask` (B, T): 1 = real
token, 0 = pad; left and right padding give the same result.

| kind              | paper    | what it reads                         | trainable                     |
|-------------------|----------|---------------------------------------|-------------------------------|
| eos               | M1       | last real token of block L            | nothing                       |
| mean              |          | masked mean of block L                | nothing                       |
| trainable         | M2, M4   | block L: its EOS token, or all tokens | latents + cross-attention     |
| mltp              | M3, M5   | one vector per selected block, + W    | W (S, D) + latents + c.-attn. |
| layer-mean        | abl. 1   | one vector per selected block, mean   | nothing                       |
| layer-mean-norm   | control  | the same, each vector LayerNorm'ed    | nothing                       |
| scalar-mix        | control  | softmax-weighted LayerNorm'ed vectors | S mixing weights (ELMo)       |

Which settings each kind reads is declared beside the registry at the end of this file (`KINDS`).

Widths. The official pooler (yixuantt/PoolingAndAttn, pooling_layers/MultiLayersTrainablePooling.py) uses
R = 768 latents, 32 heads x 2048 = 65,536 inner width and a 4D GEGLU feed-forward: ~1.28B
parameters at D = 4096 (Mistral-7B), 18% of the base model. That scale makes no sense for the
default SmolLM2-135M (D = 576, L = 30), so the defaults here are: inner width = D (head width 64,
D/64 heads: the usual head width of the decoders themselves), R = 128 latents (the official
R/D ratio 768/4096 = 0.19 gives ~108 at D = 576, rounded up), FF 4D GEGLU as official. At D = 576
that is ~5.4M parameters (4% of the base). `count_parameters(config)` reports it for any config;
pass the official values explicitly to reproduce the paper's sizes.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .hygiene.atomic import atomic_write, atomic_write_json
from .layers import parse_layers
from .perceiver import CrossAttentionBlock, upcast

CONFIG_FILE = "pooler_config.json"
WEIGHTS_FILE = "pooler.safetensors"


@dataclass
class PoolerConfig:
    kind: str
    hidden_size: int  # D of the model
    num_layers: int  # L of the model (blocks, not counting the embedding output)
    layers: str = "all"  # the kinds that read one vector per block: which blocks (mltp.layers grammar)
    # The kinds that read one block: that block; None = the last, after the final norm. A middle block is
    # the obvious rival explanation for "middle blocks beat the last ones", so it is a control.
    block: int | None = None
    # mltp / layer-mean: one vector per block from its last real token ("eos", the official choice
    # for a causal model, M3) or its masked mean ("mean", official for a bidirectional one, M5).
    # No default: the right choice depends on the model's attention, so the caller states it.
    layer_token: str | None = None
    layer_weights: bool = True  # mltp: the trainable layer-weight matrix W; False = ablation 1
    # mltp: W's init std. 1.0 is official (nn.Embedding's N(0,1)); the per-block vectors it is added
    # to are far larger (their RMS grows with depth), so a larger std lets W weigh as much as they do.
    layer_weight_std: float = 1.0
    # trainable: "eos" feeds only the last real token of block L (official M2, causal), "all" feeds
    # every real token of block L with the padding mask (official M4, bidirectional, mask added).
    # Default "eos" because the default model is causal (M2); a bidirectional run passes "all".
    tokens: str = "eos"
    num_latents: int = 128  # R, Perceiver latents (official 768; see the module docstring)
    num_heads: int | None = None  # None: D // head_dim
    head_dim: int | None = None  # None: 64, the head width of the decoders themselves
    ff_mult: int = 4  # GEGLU width F = ff_mult * D (official 4)

    def __post_init__(self):
        def fail(why):
            return ValueError(f"PoolerConfig(kind={self.kind!r}): {why}")

        if self.kind not in KINDS:
            raise fail(f"unknown kind, expected one of {tuple(KINDS)}")
        if not (isinstance(self.layer_weight_std, (int, float)) and math.isfinite(self.layer_weight_std)
                and self.layer_weight_std > 0):
            raise fail(f"layer_weight_std must be a positive number, got {self.layer_weight_std!r}")
        for name in ("hidden_size", "num_layers", "num_latents", "ff_mult"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(f"{name} must be a positive int, got {value!r}")
        parse_layers(self.layers, self.num_layers)  # raises ValueError naming the spec
        single = kinds_reading("block")
        if self.block is not None and (self.kind not in single or isinstance(self.block, bool)
                                       or not isinstance(self.block, int) or not 1 <= self.block <= self.num_layers):
            raise fail(f"block={self.block!r}: a block number 1..{self.num_layers}, for kinds {single} only")
        if "layer_token" in KINDS[self.kind].reads and self.layer_token not in ("eos", "mean"):
            raise fail(f"layer_token must be 'eos' or 'mean' (causal: eos, bidirectional: mean), got {self.layer_token!r}")
        if self.tokens not in ("eos", "all"):
            raise fail(f"tokens must be 'eos' or 'all', got {self.tokens!r}")
        self._resolve_widths(fail)

    def _resolve_widths(self, fail):
        D = self.hidden_size
        if self.num_heads is None and self.head_dim is None:
            self.head_dim = 64
        if self.num_heads is None:
            if D % self.head_dim:
                raise fail(f"hidden_size {D} is not a multiple of head_dim {self.head_dim}; give num_heads")
            self.num_heads = D // self.head_dim
        if self.head_dim is None:
            if D % self.num_heads:
                raise fail(f"hidden_size {D} is not a multiple of num_heads {self.num_heads}; give head_dim")
            self.head_dim = D // self.num_heads
        if self.num_heads < 1 or self.head_dim < 1:
            raise fail(f"num_heads={self.num_heads}, head_dim={self.head_dim} must be positive")


# ---- reading the hidden states -------------------------------------------------------------


def last_token(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # x (B, T, D), mask (B, T) bool -> (B, D): the last real token, for left or right padding.
    T = x.shape[1]
    positions = torch.arange(T, device=x.device)  # (T,)
    last = torch.where(mask, positions, -1).amax(dim=1)  # (B,) index of the last real token
    return x[torch.arange(x.shape[0], device=x.device), last]  # (B, D)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # x (B, T, D), mask (B, T) bool -> (B, D), summed in fp32. `where`, not a product: a pad row
    # holding inf/NaN must not leak into the sum (0 * inf = NaN).
    x = torch.where(mask[..., None], upcast(x), 0.0)  # (B, T, D)
    return x.sum(dim=1) / mask.sum(dim=1, keepdim=True).to(x.dtype)  # (B, D)


def per_layer_vectors(hidden_states, mask: torch.Tensor, layers: tuple[int, ...], layer_token: str) -> torch.Tensor:
    # one (B, D) vector per selected block, stacked in selection order -> (B, S, D)
    reduce = last_token if layer_token == "eos" else masked_mean
    return torch.stack([upcast(reduce(hidden_states[i], mask)) for i in layers], dim=1)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(upcast(x), p=2, dim=-1)  # (B, D), in fp32 under autocast


# ---- the poolers ---------------------------------------------------------------------------


class Pooler(nn.Module):
    """Base: holds the config, says which hidden states it reads, checks the inputs."""

    def __init__(self, config: PoolerConfig):
        super().__init__()
        self.config = config
        self.read = config.num_layers if config.block is None else config.block  # the single block read
        self.needs_layers: tuple[int, ...] = (self.read,)

    def layer_table(self) -> list[nn.Parameter]:
        """The parameters that weigh or mark the blocks (MLTP's W): trained with their own learning
        rate multiplier, kept out of weight decay, and their movement recorded."""
        return []

    def check_inputs(self, hidden_states, attention_mask) -> torch.Tensor:
        L, D = self.config.num_layers, self.config.hidden_size
        if not isinstance(hidden_states, (tuple, list)):
            raise ValueError(f"hidden_states must be a tuple of L+1={L + 1} tensors, got {type(hidden_states).__name__}")
        if not max(self.needs_layers) < len(hidden_states) <= L + 1:
            raise ValueError(
                f"hidden_states has {len(hidden_states)} entries; this {self.config.kind} pooler reads "
                f"indices {self.needs_layers} of the L+1={L + 1} hidden states"
            )
        if attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be (B, T), got shape {tuple(attention_mask.shape)}")
        B, T = attention_mask.shape
        for i in self.needs_layers:
            h = hidden_states[i]
            if h is None or tuple(h.shape) != (B, T, D):
                shape = None if h is None else tuple(h.shape)
                raise ValueError(f"hidden_states[{i}] has shape {shape}, expected (B, T, D) = {(B, T, D)}")
        mask = attention_mask != 0  # (B, T) bool
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"attention_mask rows {empty} have no real token")
        return mask


class EosPooler(Pooler):
    # M1: the last real token of the final hidden state (the EOS the tokenizer appends).
    def forward(self, hidden_states, attention_mask):
        mask = self.check_inputs(hidden_states, attention_mask)
        return l2_normalise(last_token(hidden_states[self.read], mask))


class MeanPooler(Pooler):
    def forward(self, hidden_states, attention_mask):
        mask = self.check_inputs(hidden_states, attention_mask)
        return l2_normalise(masked_mean(hidden_states[self.read], mask))


class LayerMeanPooler(Pooler):
    # Ablation 1's plain baseline: the per-layer vectors of the selected blocks simply averaged.
    def __init__(self, config):
        super().__init__(config)
        self.layers = parse_layers(config.layers, config.num_layers)
        self.needs_layers = self.layers

    def forward(self, hidden_states, attention_mask):
        mask = self.check_inputs(hidden_states, attention_mask)
        h = per_layer_vectors(hidden_states, mask, self.layers, self.config.layer_token)  # (B, S, D)
        return l2_normalise(h.mean(dim=1))  # (B, D)


def layer_norm_plain(h: torch.Tensor) -> torch.Tensor:
    # (B, S, D) -> (B, S, D): each vector to zero mean, unit variance, as MLTP's context LayerNorm
    # at its init (weight 1, bias 0) scales what its attention reads.
    return F.layer_norm(upcast(h), h.shape[-1:])


class LayerMeanNormPooler(LayerMeanPooler):
    # The fair plain baseline: the per-block vectors' norms grow with depth, so an un-normalised
    # mean is mostly the last blocks; normalised first, each block counts the same.
    def forward(self, hidden_states, attention_mask):
        mask = self.check_inputs(hidden_states, attention_mask)
        h = per_layer_vectors(hidden_states, mask, self.layers, self.config.layer_token)  # (B, S, D)
        return l2_normalise(layer_norm_plain(h).mean(dim=1))  # (B, D)


class ScalarMixPooler(LayerMeanPooler):
    """A learned weighting of the blocks and nothing else (ELMo's scalar mix, arXiv 1802.05365 eq. 1):

        embedding = sum_s softmax(w)_s * LN(h_s)        w (S,), zeros at init = layer-mean-norm

    ELMo's global scale gamma is left out: the embedding is L2-normalised anyway.
    """

    def __init__(self, config):
        super().__init__(config)
        self.mix = nn.Parameter(torch.zeros(len(self.layers)))  # w (S,)

    def layer_table(self):
        return [self.mix]

    def forward(self, hidden_states, attention_mask):
        mask = self.check_inputs(hidden_states, attention_mask)
        h = layer_norm_plain(per_layer_vectors(hidden_states, mask, self.layers, self.config.layer_token))  # (B, S, D)
        weights = torch.softmax(upcast(self.mix), dim=0)  # (S,)
        return l2_normalise(torch.einsum("s,bsd->bd", weights.to(h.dtype), h))  # (B, D)


class TrainablePooler(Pooler):
    """M2 / M4: learned latents (R, D) read block L through one cross-attention block.

    The latents are the queries, the context rows the keys/values; the R outputs are averaged.
    """

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.latents = nn.Parameter(torch.randn(c.num_latents, c.hidden_size))  # (R, D), N(0,1) as official
        self.block = CrossAttentionBlock(c.hidden_size, c.num_heads, c.head_dim, c.ff_mult)

    def resample(self, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        # context (B, K, D) -> (B, D)
        latents = self.latents.expand(context.shape[0], -1, -1)  # (B, R, D), shared across the batch
        x = self.block(latents, context, context_mask)  # (B, R, D)
        return l2_normalise(x.mean(dim=1))  # (B, D): mean over the R latents

    def forward(self, hidden_states, attention_mask):
        mask = self.check_inputs(hidden_states, attention_mask)
        last = hidden_states[self.read]  # (B, T, D)
        if self.config.tokens == "eos":
            return self.resample(last_token(last, mask)[:, None, :], None)  # context (B, 1, D)
        # Pads masked out of the softmax, and zeroed first: a non-finite pad row would otherwise
        # reach the output through 0 * NaN in probs @ v.
        last = torch.where(mask[..., None], last, 0.0)  # (B, T, D)
        return self.resample(last, mask)  # context (B, T, D)


class MLTPPooler(TrainablePooler):
    """M3 / M5: the trainable pooler fed one vector per selected block, plus the layer weights W.

        h  = [vector of block l for l in layers]   (B, S, D)
        h' = h + W                                 W (S, D), row s = position s in the selection
        embedding = resample(h')                   no mask over layers

    The official code keeps W as nn.Embedding(32, D) looked up at arange(S), default N(0,1) init;
    a plain (S, D) parameter is the same table. `layer_weights=False` drops W and nothing else
    (ablation 1): the pooler then sees an unordered set of layers (no mask, no positions).
    """

    def __init__(self, config):
        super().__init__(config)
        self.layers = parse_layers(config.layers, config.num_layers)
        self.needs_layers = self.layers
        if config.layer_weights:
            W = torch.randn(len(self.layers), config.hidden_size) * config.layer_weight_std  # (S, D)
            self.layer_weights = nn.Parameter(W)
        else:
            self.layer_weights = None

    def layer_table(self):
        return [] if self.layer_weights is None else [self.layer_weights]

    def forward(self, hidden_states, attention_mask):
        mask = self.check_inputs(hidden_states, attention_mask)
        h = per_layer_vectors(hidden_states, mask, self.layers, self.config.layer_token)  # (B, S, D)
        if self.layer_weights is not None:
            h = h + upcast(self.layer_weights)  # (B, S, D) + (S, D)
        return self.resample(h, None)


# ---- the kinds, and the settings each reads -----------------------------------------------------


class Kind(NamedTuple):
    pooler: type[Pooler]
    # The settings it reads: PoolerConfig fields, and `layer_table_lr_mult` (TrainConfig: the
    # learning rate of its layer table, mltp.train). The command line refuses a setting given for a
    # kind that does not read it and records the others as unused (mltp/cli/flags.py).
    reads: tuple[str, ...]


WIDTHS = ("num_latents", "num_heads", "head_dim")  # the cross-attention block's
W_SETTINGS = ("layer_weight_std", "layer_table_lr_mult")  # read only while W is on (`settings_read`)

KINDS: dict[str, Kind] = {
    "eos": Kind(EosPooler, ("block",)),
    "mean": Kind(MeanPooler, ("block",)),
    "trainable": Kind(TrainablePooler, ("block", "tokens", *WIDTHS)),
    "mltp": Kind(MLTPPooler, ("layers", "layer_token", "layer_weights", *W_SETTINGS, *WIDTHS)),
    "layer-mean": Kind(LayerMeanPooler, ("layers", "layer_token")),
    "layer-mean-norm": Kind(LayerMeanNormPooler, ("layers", "layer_token")),
    "scalar-mix": Kind(ScalarMixPooler, ("layers", "layer_token", "layer_table_lr_mult")),
}
"""Adding a pooler setting touches the poolers (this file; mltp/perceiver.py too when it is the
cross-attention's) and the command line, nothing else. Say the cross-attention should drop out at
rate p: `attn_dropout: float = 0.0` joins PoolerConfig (with its check in __post_init__),
CrossAttentionBlock (perceiver.py) takes it from the poolers that build one, and
"attn_dropout" joins WIDTHS above (read by trainable and mltp); then one line in
mltp/cli/flags.py's POOLER_FLAGS, `"attn_dropout": "attn_dropout"`, and its `add_argument` beside the
other pooler flags. Every run records it (a PoolerConfig field is saved with the pooler, a flag is a
run setting), and `--attn-dropout` given with `--pool eos` is refused, naming the flag."""


def kinds_reading(setting: str) -> tuple[str, ...]:
    return tuple(kind for kind, k in KINDS.items() if setting in k.reads)


def settings_read(config: PoolerConfig) -> tuple[str, ...]:
    """The settings this configuration reads: its kind's, less W's own when W is off (ablation 1)."""
    reads = KINDS[config.kind].reads
    return reads if config.layer_weights else tuple(s for s in reads if s not in W_SETTINGS)


def build_pooler(config: PoolerConfig) -> Pooler:
    return KINDS[config.kind].pooler(config)


def count_parameters(config: PoolerConfig) -> int:
    # Built on the meta device: counting the official 1.28B-parameter pooler allocates nothing.
    with torch.device("meta"):
        pooler = build_pooler(config)
    return sum(p.numel() for p in pooler.parameters())


# ---- save / load ---------------------------------------------------------------------------


def save_pooler(pooler: Pooler, directory: str | os.PathLike) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in pooler.state_dict().items()}
    # Weights first, config last: a directory with a config always has its weights beside it.
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write_json(directory / CONFIG_FILE, asdict(pooler.config))


def load_pooler(directory: str | os.PathLike) -> Pooler:
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"pooler file not found: {path}")
    with open(config_path) as f:
        raw = json.load(f)
    raw.pop("dictionary_size", None)  # written while a latent-attention kind existed; read by no kind
    known = {f.name for f in fields(PoolerConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{config_path}: unknown pooler config keys {unknown}")
    pooler = build_pooler(PoolerConfig(**raw))

    # Strict: same names, same shapes, before anything is copied.
    saved = load_file(str(weights_path))
    expected = pooler.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights_path}: missing tensors {missing}, unexpected tensors {unexpected}")
    for name, tensor in saved.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
    pooler.load_state_dict(saved, strict=True)
    return pooler
