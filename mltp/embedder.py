"""The embedding model: decoder (+ LoRA) -> every hidden state -> pooler -> one unit vector per text.

`Embedder.encode(texts, instruction=None)` is the evaluator contract: it sorts texts by token length
(so a batch pads little), batches, and restores the caller's order. Instructions are formatted the
E5-Mistral way, which the paper's official code follows: "Instruct: {instruction}\\nQuery: {text}".

A saved embedder is a directory: `embedder.json` (base model, attention, max length, template),
the pooler (`pooler_config.json`, `pooler.safetensors`) and, when fine-tuned, the LoRA adapter in
PEFT's layout (`adapter_model.safetensors`, `adapter_config.json`). `Embedder.load` folds the adapter
into the base weights (`merge_lora`): unmerged, the adapter adds four computing operators to each of
a block's seven projections, for the same vectors (counts, timing and distance in bench/README.md,
"Evaluation through a merged adapter").
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .hygiene.atomic import atomic_write_json
from .hygiene.progress import Progress
from .formats.checkpoint import load_model, model_identity
from .formats.gguf import KNOWN_MODELS
from . import packed
from .lora import LoRAConfig, lora_layers, merge_lora
from .formats.peft import ADAPTER_CONFIG, load_adapter, save_adapter
from .model import Decoder
from .pooling import Pooler, load_pooler, save_pooler
from .tokenizer import Tokenizer, load_tokenizer

EMBEDDER_FILE = "embedder.json"
E5_TEMPLATE = "Instruct: {instruction}\nQuery: {text}"


@dataclass
class EmbedderConfig:
    model: str  # checkpoint directory or built-in name (saved: the absolute path, formats.checkpoint.model_identity)
    causal: bool = True  # False: the paper's bidirectional variant (M4, M5)
    max_length: int = 512  # the official code's training length
    template: str = E5_TEMPLATE
    padding_side: str = "left"  # poolers accept either; left keeps the EOS column aligned
    model_sha256: str | None = None  # of a checkpoint directory's weights, as saved (None: a built-in name)


class Embedder(nn.Module):
    progress = None  # a log function for long encodes (mltp.hygiene.progress); the command line sets it

    def __init__(self, model: Decoder, tokenizer: Tokenizer, pooler: Pooler, config: EmbedderConfig):
        super().__init__()
        self.model, self.tokenizer, self.pooler, self.config = model, tokenizer, pooler, config
        L = model.config.num_hidden_layers
        # Run only as many blocks as the pooler reads: middle4 of 30 blocks stops at block 17.
        top = max(pooler.needs_layers)
        self.upto = None if top >= L else top

    def format(self, texts: list[str], instruction: str | None) -> list[str]:
        if not instruction:
            return list(texts)
        return [self.config.template.format(instruction=instruction, text=t) for t in texts]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Only the blocks and states the pooler reads; on a CPU over the real tokens only (mltp.packed).
        reads = dict(causal=self.config.causal, upto=self.upto, keep=self.pooler.needs_layers)
        if packed.packs_padding(self.model, input_ids.device):
            states = packed.forward(self.model, input_ids, attention_mask, **reads)
        else:
            states = self.model(input_ids, attention_mask, **reads)
        return self.pooler(states, attention_mask)  # (B, D), unit norm

    def tokenize(self, texts: list[str], instruction: str | None = None) -> list[list[int]]:
        return self.tokenizer.encode_ids(self.format(texts, instruction), self.config.max_length)

    def batch(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        ids, mask = self.tokenizer.pad(rows, self.config.padding_side)
        return ids.to(device), mask.to(device)

    @torch.no_grad()
    def encode(
        self,
        texts: list[str],
        instruction: str | None = None,
        batch_size: int | None = None,
        max_tokens: int = 16384,
    ) -> torch.Tensor:
        """(N, D) float32 on the CPU, in the order of `texts`.

        A batch holds at most `batch_size` texts (default: 32 on a CPU; 128 on a GPU, where a
        forward of a small model costs its kernel launches whatever the batch, so fewer, larger
        batches are faster) and at most `max_tokens` padded tokens.
        """
        if len(texts) == 0:
            raise ValueError("encode() got no texts")
        device = next(self.model.parameters()).device
        batch_size = batch_size or (128 if device.type == "cuda" else 32)
        was_training = self.training
        self.eval()
        rows = self.tokenize(list(texts), instruction)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # longest first: OOM shows early
        out = None  # (N, width of the pooler's output), allocated at the first batch
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and self.model.embed_tokens.weight.dtype == torch.float32)
        start, ticker = 0, Progress(self.progress, len(rows), sum(len(r) for r in rows))
        while start < len(order):
            # A batch holds at most batch_size texts and max_tokens padded tokens.
            longest = len(rows[order[start]])
            n = max(1, min(batch_size, max_tokens // longest))
            idx = order[start:start + n]
            ids, mask = self.batch([rows[i] for i in idx])
            with autocast:
                emb = self(ids, mask)
            if out is None:
                out = torch.empty(len(rows), emb.shape[-1], dtype=torch.float32)
            out[torch.tensor(idx)] = emb.float().cpu()
            start += len(idx)
            ticker.step(start, sum(len(rows[i]) for i in idx))
        self.train(was_training)
        return out

    def save(self, directory: str | Path, lora_config: LoRAConfig | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model, sha256 = model_identity(self.config.model)
        if lora_layers(self.model):
            if lora_config is None:
                raise ValueError("the model carries LoRA layers: pass their LoRAConfig to save()")
            save_adapter(self.model, directory, lora_config, base_model=model)
        save_pooler(self.pooler, directory)
        atomic_write_json(directory / EMBEDDER_FILE, {**asdict(self.config), "model": model, "model_sha256": sha256})
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, dtype=torch.float32, device="cpu", model: str | None = None,
             merge: bool = True) -> "Embedder":
        """Rebuild a saved embedder; `model` overrides the base checkpoint path stored in it.

        `merge=True` folds a LoRA adapter into the base weights, as `run.py` evaluates a trained
        embedder; `merge=False` keeps it separate (to train it further).
        """
        directory = Path(directory)
        path = directory / EMBEDDER_FILE
        if not path.exists():
            raise FileNotFoundError(f"{directory} holds no {EMBEDDER_FILE}: not a saved embedder")
        config = EmbedderConfig(**json.loads(path.read_text()))
        if model is not None:
            config.model = model
        elif config.model not in KNOWN_MODELS and not Path(config.model).is_dir():
            weights = f" (weights sha256 {config.model_sha256})" if config.model_sha256 else ""
            where = "" if Path(config.model).is_absolute() else f", a path relative to where it was trained, not {Path.cwd()}"
            raise FileNotFoundError(f"{path}: its base model {config.model}{weights} is not there{where}; "
                                    "put it back, or name it (Embedder.load(..., model=DIR))")
        decoder = load_model(config.model, dtype=dtype, device=device)
        if (directory / ADAPTER_CONFIG).exists():
            load_adapter(decoder, directory)
            if merge:
                merge_lora(decoder)
        pooler = load_pooler(directory).to(device)
        return cls(decoder, load_tokenizer(config.model), pooler, config).eval()
