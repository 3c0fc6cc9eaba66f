"""The decoder's configuration, built from a Hugging Face `config.json` by one function.

Behaviour is chosen from config fields, never from model names. Each key read from the file is
named in `from_hf_config`; anything the decoder cannot honour (an unknown `model_type`, a
`rope_scaling` kind, an activation other than SiLU) is refused there with a clear error rather
than silently computed wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Per-architecture facts that Hugging Face hard-codes in the modelling file rather than storing in
# config.json. Qwen2 always has a bias on q/k/v and none on o (transformers' Qwen2Attention);
# Llama's `attention_bias` switches the bias on all four projections (LlamaAttention).
ARCHITECTURES = {
    "llama": {"qkv_bias": None, "o_bias": None},  # None: follow `attention_bias`
    "mistral": {"qkv_bias": False, "o_bias": False},
    "qwen2": {"qkv_bias": True, "o_bias": False},
}


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int  # D
    intermediate_size: int  # F, the SwiGLU width
    num_hidden_layers: int  # L
    num_attention_heads: int  # H
    num_key_value_heads: int  # K (< H: grouped-query attention)
    head_dim: int  # Dh; usually D / H, but Qwen2/Mistral variants may set it explicitly
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    sliding_window: int | None = None  # Mistral v0.1: 4096; None = full attention
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    model_type: str = "llama"


def _first(value):
    # Some configs store a list of EOS ids (generation stops at any); the first is the canonical one.
    return value[0] if isinstance(value, list) and value else value


class Fields:
    """Typed reads of a config.json dict: every error names the key and the file."""

    def __init__(self, cfg: dict, source: str):
        self.cfg, self.source = cfg, source

    def need(self, key):
        if key not in self.cfg:
            raise ValueError(f"{self.source} lacks required key '{key}'")
        return self.cfg[key]

    def typed(self, value, key, kind):
        # A string such as "six" must name its key and file, not fail inside int().
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else (
            isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{self.source}: '{key}' must be {'a number' if kind is float else 'an integer'}, got {value!r}")
        return kind(value)

    def need_int(self, key) -> int:
        return self.typed(self.need(key), key, int)

    def opt(self, key, kind, default):
        value = self.cfg.get(key)
        return default if value is None else self.typed(value, key, kind)


def check_supported(cfg: dict, source: str) -> str:
    """The model_type, after refusing what the decoder cannot compute; returns it."""
    model_type = Fields(cfg, source).need("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{source}: model_type '{model_type}' is not supported (supported: {sorted(ARCHITECTURES)})")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{source}: hidden_act '{act}' is not supported (the SwiGLU MLP needs 'silu')")
    return model_type


def rope_theta(cfg: dict, source: str) -> float:
    # transformers >= 5 nests RoPE settings under `rope_parameters`; older files keep them at top level
    # and name scaling `rope_scaling`. A file may hold both: each is checked, neither one ignored.
    for key in ("rope_parameters", "rope_scaling"):
        scaling = cfg.get(key) or {}
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"{source}: {key}: rope scaling '{rope_type}' is not supported; only plain RoPE "
                             "(rope_theta) is implemented")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    return Fields(cfg, source).typed(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)), "rope_theta", float)


def from_hf_config(cfg: dict, source: str = "config.json") -> ModelConfig:
    if not isinstance(cfg, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
    model_type = check_supported(cfg, source)
    f = Fields(cfg, source)
    hidden, heads = f.need_int("hidden_size"), f.need_int("num_attention_heads")
    if heads < 1 or hidden < 1:
        raise ValueError(f"{source}: hidden_size {hidden} and num_attention_heads {heads} must be positive")
    arch = ARCHITECTURES[model_type]
    attention_bias = bool(cfg.get("attention_bias", False))
    # Qwen2 stores a `sliding_window` value even when `use_sliding_window` is false: honour the switch.
    window = cfg.get("sliding_window")
    if cfg.get("use_sliding_window") is False:
        window = None
    return ModelConfig(
        vocab_size=f.need_int("vocab_size"),
        hidden_size=hidden,
        intermediate_size=f.need_int("intermediate_size"),
        num_hidden_layers=f.need_int("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=f.opt("num_key_value_heads", int, 0) or heads,
        head_dim=f.opt("head_dim", int, 0) or hidden // heads,
        rms_norm_eps=f.opt("rms_norm_eps", float, 1e-6),
        rope_theta=rope_theta(cfg, source),
        max_position_embeddings=f.opt("max_position_embeddings", int, 2048),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=attention_bias if arch["qkv_bias"] is None else arch["qkv_bias"],
        o_bias=attention_bias if arch["o_bias"] is None else arch["o_bias"],
        sliding_window=f.typed(window, "sliding_window", int) if window else None,
        bos_token_id=_first(cfg.get("bos_token_id")),
        eos_token_id=_first(cfg.get("eos_token_id")),
        pad_token_id=_first(cfg.get("pad_token_id")),
        model_type=model_type,
    )


def read_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no config.json in {directory}: not a Hugging Face checkpoint directory")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    return from_hf_config(cfg, source=str(path))
