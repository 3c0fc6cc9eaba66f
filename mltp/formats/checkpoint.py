"""Strict loading of Hugging Face checkpoint directories into the decoder.

A directory holds `config.json` and either `model.safetensors` or `model.safetensors.index.json`
with shards. The model is built on the meta device (no memory), each tensor is read from its file,
checked against the shape the config implies, cast, and assigned in place (`assign=True`): a 7B
model in bf16 loads within its own size, never twice.

Every expected tensor must be present and every tensor in the files must be expected, except the
known harmless ones below; each error names the tensor and the file.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from ..config import read_config
from ..hygiene.textfile import file_sha256
from ..model import Decoder

# Hugging Face name -> our name. Causal-LM checkpoints prefix the body with `model.`; AutoModel
# (base model) checkpoints do not. Either loads.
NAME_TEMPLATES = [
    (re.compile(r"^model\.(.*)$"), r"\1"),
    (re.compile(r"^(embed_tokens|layers|norm)\b(.*)$"), r"\1\2"),
    (re.compile(r"^lm_head\.weight$"), "lm_head.weight"),
]
# Present in some checkpoints, never needed here: old RoPE caches we recompute.
HARMLESS = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


def _our_name(hf_name: str) -> str | None:
    for pattern, replacement in NAME_TEMPLATES:
        if pattern.match(hf_name):
            return pattern.sub(replacement, hf_name)
    return None


def _tensor_files(directory: Path) -> dict[str, Path]:
    """Tensor name -> file holding it."""
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / fname for name, fname in weight_map.items()}
    if single.exists():
        with safe_open(single, framework="pt") as f:
            return {name: single for name in f.keys()}
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor model.safetensors.index.json")


def resolve_model(path_or_name: str | Path) -> Path:
    """A checkpoint directory, or a short name of a built-in model (converted on first use)."""
    from .gguf import KNOWN_MODELS, default_model_dir

    if str(path_or_name) in KNOWN_MODELS:
        return default_model_dir(str(path_or_name))
    path = Path(path_or_name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model '{path_or_name}' is neither a checkpoint directory nor a known name ({', '.join(KNOWN_MODELS)})"
        )
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model directory {path} has no config.json")
    return path


@functools.lru_cache(maxsize=None)
def _weights_sha256(directory: str, stamp: tuple) -> str:
    files = sorted(set(_tensor_files(Path(directory)).values()))
    per_file = "".join(f"{f.name} {file_sha256(f)}\n" for f in files)
    return hashlib.sha256(per_file.encode()).hexdigest()


def weights_sha256(directory: Path) -> str:
    """sha256 over each weights file's sha256 (name order); computed once a process for files unchanged."""
    files = sorted(set(_tensor_files(directory).values()))
    return _weights_sha256(str(directory), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def model_identity(path_or_name: str | Path) -> tuple[str, str | None]:
    """What names a base model from any directory: a built-in name as is; a checkpoint directory by
    its absolute path and its weights' sha256 (a path as typed only holds from where it was typed)."""
    from .gguf import KNOWN_MODELS

    if str(path_or_name) in KNOWN_MODELS:
        return str(path_or_name), None
    directory = resolve_model(path_or_name).resolve()
    return str(directory), weights_sha256(directory)


def load_model(
    path_or_name: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    lm_head: bool = False,
) -> Decoder:
    directory = resolve_model(path_or_name)
    cfg = read_config(directory)
    with torch.device("meta"):
        model = Decoder(cfg, lm_head=lm_head)
    expected = {name: p.shape for name, p in model.state_dict().items()}

    files = _tensor_files(directory)
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for hf_name, path in files.items():
        ours = _our_name(hf_name)
        if HARMLESS.search(hf_name) or (ours == "lm_head.weight" and "lm_head.weight" not in expected):
            continue  # an LM head we were not asked for, or a tied copy of the embedding
        if ours is None or ours not in expected:
            raise ValueError(f"unexpected tensor '{hf_name}' in {path.name} ({directory}): not part of a {cfg.model_type} decoder")
        by_file.setdefault(path, []).append((hf_name, ours))

    state: dict[str, torch.Tensor] = {}
    for path, names in by_file.items():
        if not path.exists():
            raise FileNotFoundError(f"shard {path.name} named by the index is missing from {directory}")
        with safe_open(path, framework="pt", device="cpu") as f:
            for hf_name, ours in names:
                t = f.get_tensor(hf_name)
                if not t.dtype.is_floating_point:  # cast to float it would load, and give NaN scores
                    raise ValueError(f"tensor '{hf_name}' in {path} is {t.dtype}, not floating point: "
                                     "a model's weights must be float (the checkpoint is damaged or not a model)")
                if tuple(t.shape) != tuple(expected[ours]):
                    raise ValueError(
                        f"tensor '{hf_name}' in {path.name} has shape {tuple(t.shape)}, "
                        f"expected {tuple(expected[ours])} from config.json"
                    )
                state[ours] = t.to(device=device, dtype=dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"checkpoint {directory} lacks tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
