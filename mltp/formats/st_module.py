"""sentence-transformers modules for an exported mltp embedder (optional extra `st`).

An export (mltp.formats.export) is a directory that `SentenceTransformer(DIR, trust_remote_code=True)`
loads as two modules, listed in its `modules.json`:

    0  MLTPDecoder   (the root)        text -> ids + EOS -> transformers' AutoModel -> every hidden state
    1  MLTPPooling   (1_MLTPPooling/)  hidden states + mask -> mltp's own pooler -> (B, D), unit norm

The decoder is a plain Hugging Face checkpoint (the LoRA already merged), run by `transformers`.
Two things sentence-transformers' stock `Transformer` module would do differently from mltp, so
this module does them itself:
- every text ends in the end-of-text token, appended after truncation (mltp.tokenizer);
- positions count real tokens only and the attention mask is mltp's own (causal or bidirectional,
  pad rows see themselves: mltp.model.attention_mask_4d), so left padding gives the same vectors
  as right padding. transformers numbers pad positions too unless `position_ids` is passed.

The pooling module runs mltp's pooler classes (`load_pooler`), so every kind mltp knows is
exported without a change here. sentence-transformers >= 6 imports a module class from outside
its own package only with `trust_remote_code=True`; the class is this file, not code in the export.

Instructions are sentence-transformers prompts (`config_sentence_transformers.json`): the text
before `{text}` in mltp's template, one per evaluation task, e.g.
`model.encode(texts, prompt_name="STSBenchmark")`.
"""
from __future__ import annotations

import torch

from .export import DECODER_CONFIG
from ..model import attention_mask_4d
from ..pooling import load_pooler, save_pooler

try:  # the base classes exist only with the extra installed; without it, importing this file says so
    from sentence_transformers.base.modules import InputModule, Module
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("mltp.formats.st_module needs sentence-transformers: pip install 'mltp[st]'") from e


class MLTPDecoder(InputModule):
    """Texts -> mltp's token ids -> the Hugging Face decoder -> all L+1 hidden states."""

    config_file_name = DECODER_CONFIG
    config_keys = ["max_seq_length", "padding_side", "causal", "eos_token_id", "pad_token_id"]
    save_in_root = True

    def __init__(self, model_name_or_path: str, max_seq_length: int = 512, padding_side: str = "left",
                 causal: bool = True, eos_token_id: int | None = None, pad_token_id: int | None = None,
                 model_kwargs: dict | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if padding_side not in ("left", "right"):
            raise ValueError(f"{DECODER_CONFIG}: padding_side must be 'left' or 'right', got {padding_side!r}")
        if eos_token_id is None:
            raise ValueError(f"{DECODER_CONFIG}: eos_token_id is required (mltp appends it to every text)")
        self.max_seq_length, self.padding_side, self.causal = max_seq_length, padding_side, causal
        self.eos_token_id = eos_token_id
        self.pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
        kwargs = {"dtype": torch.float32, **(model_kwargs or {})}
        self.auto_model = AutoModel.from_pretrained(model_name_or_path, **kwargs)
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", model_kwargs: dict | None = None, **kwargs):
        hub = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **hub)
        return cls(model_name_or_path, **config, model_kwargs=model_kwargs)

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        texts = [prompt + t for t in inputs] if prompt else list(inputs)
        # As mltp.tokenizer: the tokenizer's own special tokens, truncated to leave room for EOS.
        rows = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        rows = [ids[: self.max_seq_length - 1] + [self.eos_token_id] for ids in rows]
        T = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), T), self.pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
        for b, ids in enumerate(rows):
            span = slice(T - len(ids), T) if self.padding_side == "left" else slice(0, len(ids))
            input_ids[b, span] = torch.tensor(ids, dtype=torch.long)
            mask[b, span] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def forward(self, features: dict, **kwargs) -> dict:
        ids, mask = features["input_ids"], features["attention_mask"]  # (B, T) each
        T = ids.shape[1]
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T): pads reuse 0, as mltp.model
        window = getattr(self.auto_model.config, "sliding_window", None)
        window = window if window is not None and T > window else None
        allowed = attention_mask_4d(mask, T, self.causal, window, ids.device)  # (B, 1, T, T) bool
        dtype = self.auto_model.dtype
        # A prepared 4D mask is used as given by transformers; additive, so eager and SDPA agree.
        bias = torch.zeros(allowed.shape, dtype=dtype, device=ids.device).masked_fill(~allowed, torch.finfo(dtype).min)
        out = self.auto_model(input_ids=ids, attention_mask=bias, position_ids=positions, output_hidden_states=True)
        features["all_layer_embeddings"] = out.hidden_states  # L+1 x (B, T, D), index L after the final norm
        features["token_embeddings"] = out.hidden_states[-1]
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.auto_model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.save_tokenizer(output_path)
        self.save_config(output_path)


class MLTPPooling(Module):
    """Every hidden state the pooler reads + the attention mask -> mltp's pooler -> sentence_embedding."""

    config_keys: list[str] = []

    def __init__(self, pooler):
        super().__init__()
        self.pooler = pooler

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs):
        hub = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        directory = cls.load_dir_path(model_name_or_path, subfolder=subfolder, **hub)
        return cls(load_pooler(directory))

    def forward(self, features: dict, **kwargs) -> dict:
        states = features["all_layer_embeddings"]  # L+1 x (B, T, D)
        features["sentence_embedding"] = self.pooler(tuple(states), features["attention_mask"])  # (B, D)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.pooler.config.hidden_size

    get_embedding_dimension = get_sentence_embedding_dimension

    def save(self, output_path: str, *args, **kwargs) -> None:
        save_pooler(self.pooler, output_path)

