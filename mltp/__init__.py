"""mltp: Multi-Layers Trainable Pooling for LLM embeddings, and the study of what in it helps.

    model = mltp.load_model("smollm2-135m")            # or a Hugging Face checkpoint directory
    states = model(input_ids, attention_mask)           # L+1 hidden states, (B, T, D) each
    emb = mltp.Embedder.load("runs/<run>/final")        # decoder + LoRA + pooler
    vectors = emb.encode(["a text"], instruction=None)  # (N, D), unit norm
"""
from .checkpoint import load_model, resolve_model
from .config import ModelConfig, from_hf_config
from .data import Pair, build_mixture, mixture_report
from .embedder import Embedder, EmbedderConfig
from .gguf import convert_gguf, default_model_dir
from .layers import describe_layers, parse_layers
from .lora import LoRAConfig, apply_lora, load_adapter, merge_lora, save_adapter
from .loss import info_nce
from .model import Decoder
from .pooling import PoolerConfig, build_pooler, count_parameters, load_pooler, save_pooler
from .tokenizer import Tokenizer, load_tokenizer
from .train import TrainConfig, train

__all__ = [
    "load_model", "resolve_model", "ModelConfig", "from_hf_config", "Decoder", "Tokenizer", "load_tokenizer",
    "convert_gguf", "default_model_dir", "LoRAConfig", "apply_lora", "load_adapter", "save_adapter", "merge_lora",
    "parse_layers", "describe_layers", "PoolerConfig", "build_pooler", "count_parameters", "load_pooler", "save_pooler",
    "info_nce", "Pair", "build_mixture", "mixture_report", "Embedder", "EmbedderConfig", "TrainConfig", "train",
]
