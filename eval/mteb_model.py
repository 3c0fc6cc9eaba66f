"""An mltp encoder for the `mteb` package (optional extra `mteb`), with mltp's instructions.

    import mteb
    from eval.mteb_model import MTEBModel
    model = MTEBModel.load("runs/<run>/final")
    mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark"]))

It satisfies mteb's `EncoderProtocol` (mteb/models/models_protocols.py): `encode(DataLoader, *,
task_metadata, hf_split, hf_subset, prompt_type)`, cosine `similarity` / `similarity_pairwise`,
and `mteb_model_meta`. Instructions follow eval.tasks, so MTEB and eval/ feed the model the
same text: a task eval/ knows gets its instruction there (E5-Mistral's); any other gets MTEB's
own task prompt. Retrieval documents (prompt type "document") get none; every other text does.

Importing this file needs nothing; mteb is imported only where its types are built.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .tasks import TASKS

BY_MTEB_NAME = {task.mteb_name: task for task in TASKS.values()}  # MTEB's names: Banking77Classification, ...


class MTEBModel:
    def __init__(self, encoder, name: str = "mltp", batch_size: int | None = None):
        if not hasattr(encoder, "encode"):
            raise ValueError(f"encoder {type(encoder).__name__} has no encode(texts, instruction=None) method")
        self.encoder, self.name, self.batch_size = encoder, name, batch_size

    @classmethod
    def load(cls, directory: str | Path, **kwargs) -> "MTEBModel":
        """A saved embedder (a run's final/ folder), evaluated as run.py evaluates it (LoRA merged)."""
        from mltp.embedder import Embedder

        return cls(Embedder.load(directory, **kwargs), name=f"mltp/{Path(directory).resolve().parent.name}")

    def instruction(self, task_metadata, prompt_type) -> str | None:
        if prompt_type is not None and getattr(prompt_type, "value", prompt_type) == "document":
            return None  # retrieval: the corpus side goes plain (eval.tasks, E5-Mistral)
        if task_metadata.name in BY_MTEB_NAME:
            return BY_MTEB_NAME[task_metadata.name].instruction
        prompt = task_metadata.prompt  # MTEB's own: a string, or {"query": ..., "document": ...}
        if isinstance(prompt, dict):
            prompt = prompt.get("query")
        return prompt or None

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        extra = {"batch_size": self.batch_size} if self.batch_size else {}
        emb = self.encoder.encode(texts, instruction=self.instruction(task_metadata, prompt_type), **extra)
        return (emb.cpu().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb)).astype(np.float32)  # (N, D)

    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        a, b = _unit(embeddings1), _unit(embeddings2)  # (N, D), (M, D)
        return a @ b.T  # (N, M) cosine

    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        return (_unit(embeddings1) * _unit(embeddings2)).sum(dim=-1)  # (N,) cosine

    @property
    def mteb_model_meta(self):
        from mteb.models.model_meta import ModelMeta

        return ModelMeta.create_empty(overwrites={"name": self.name, "similarity_fn_name": "cosine"})

def _unit(x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    x = x[None] if x.dim() == 1 else x
    return torch.nn.functional.normalize(x, dim=-1)
