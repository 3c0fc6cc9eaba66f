"""mltp: Multi-Layers Trainable Pooling for LLM embeddings, and the study of what in it helps."""
from .checkpoint import load_model, resolve_model
from .config import ModelConfig, from_hf_config
from .model import Decoder
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["load_model", "resolve_model", "load_tokenizer", "Decoder", "ModelConfig", "from_hf_config", "Tokenizer"]
