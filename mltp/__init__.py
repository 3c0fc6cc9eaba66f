"""mltp: Multi-Layers Trainable Pooling for LLM embeddings, and the study of what in it helps.

    model = mltp.load_model("smollm2-135m")            # or a Hugging Face checkpoint directory
    states = model(input_ids, attention_mask)           # L+1 hidden states, (B, T, D) each
    emb = mltp.Embedder.load("runs/<run>/final")        # decoder + LoRA + pooler
    vectors = emb.encode(["a text"], instruction=None)  # (N, D), unit norm

The package, read from the bottom up:
    the core         model.py (the decoder), lora.py, pooling.py + perceiver.py (the poolers and
                     their cross-attention), loss.py (InfoNCE), embedder.py, step.py (one training
                     step); beside them config.py, tokenizer.py, layers.py, packed.py
    training         train.py (the loop), gradcache.py and distributed.py (variants of the step)
    hygiene/         a run directory kept whole: atomic writes, strict JSON, history, interrupts,
                     run identity, checks before the slow work
    formats/         checkpoints and integrations: Hugging Face loading, GGUF, PEFT, sentence-transformers
    data/            the training sources, the decontaminated mixture, your own pairs, the data manifest
    cli/             the commands (`mltp` / run.py), one module each

Importing mltp loads none of it: each name below is imported on first use.
"""
from __future__ import annotations

import importlib

# module -> the names it gives the package
_MODULES = {
    "config": ("ModelConfig", "from_hf_config"), "model": ("Decoder",), "tokenizer": ("Tokenizer", "load_tokenizer"),
    "layers": ("describe_layers", "parse_layers"), "lora": ("LoRAConfig", "apply_lora", "merge_lora"),
    "pooling": ("PoolerConfig", "build_pooler", "count_parameters", "load_pooler", "save_pooler"),
    "loss": ("info_nce",), "embedder": ("Embedder", "EmbedderConfig"), "train": ("TrainConfig", "train"),
    "formats.checkpoint": ("load_model", "resolve_model"), "formats.gguf": ("convert_gguf", "default_model_dir"),
    "formats.peft": ("load_adapter", "save_adapter"), "data.mixture": ("Pair", "build_mixture", "mixture_report"),
}
_NAMES = {name: module for module, names in _MODULES.items() for name in names}
__all__ = list(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

