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
import sys

# name -> the module that defines it
_NAMES = {
    "load_model": "formats.checkpoint", "resolve_model": "formats.checkpoint",
    "ModelConfig": "config", "from_hf_config": "config",
    "Pair": "data.mixture", "build_mixture": "data.mixture", "mixture_report": "data.mixture",
    "Embedder": "embedder", "EmbedderConfig": "embedder",
    "convert_gguf": "formats.gguf", "default_model_dir": "formats.gguf",
    "describe_layers": "layers", "parse_layers": "layers",
    "LoRAConfig": "lora", "apply_lora": "lora", "merge_lora": "lora",
    "load_adapter": "formats.peft", "save_adapter": "formats.peft",
    "info_nce": "loss", "Decoder": "model",
    "PoolerConfig": "pooling", "build_pooler": "pooling", "count_parameters": "pooling",
    "load_pooler": "pooling", "save_pooler": "pooling",
    "Tokenizer": "tokenizer", "load_tokenizer": "tokenizer",
    "TrainConfig": "train", "train": "train",
}
__all__ = list(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# eval/ still imports these three by the paths they had before hygiene/ and data/ existed; the
# aliases go when eval/ imports nothing from mltp. All three are standard library only.
for _old, _new in (("atomic", "hygiene.atomic"), ("textfile", "hygiene.textfile"), ("sources", "data.sources")):
    sys.modules[f"{__name__}.{_old}"] = importlib.import_module(f"{__name__}.{_new}")
