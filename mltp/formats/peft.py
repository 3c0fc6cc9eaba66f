"""LoRA adapters in PEFT's layout: `save_adapter` writes what `peft.PeftModel.from_pretrained` reads.

A directory holds `adapter_model.safetensors` (keys `base_model.model.<module path>.lora_A.weight`,
as PEFT writes them for a `LlamaModel` base) and `adapter_config.json`; `load_adapter` reads PEFT's
own files the same way, strict on keys and shapes, and refuses the options mltp.lora does not
implement (DoRA, rsLoRA, rank patterns, LoRA on biases ...) rather than load them as plain LoRA.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..hygiene.atomic import atomic_write
from ..lora import LoRAConfig, LoRALinear, apply_lora, lora_layers

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# PEFT prefixes every saved key with the wrapper path of a PeftModel around an AutoModel.
PEFT_PREFIX = "base_model.model."


def _peft_keys(path: str) -> tuple[str, str]:
    return f"{PEFT_PREFIX}{path}.lora_A.weight", f"{PEFT_PREFIX}{path}.lora_B.weight"


def _check_layers_match(layers: dict[str, LoRALinear], config: LoRAConfig, where: str) -> None:
    for name, m in layers.items():
        if m.r != config.r or m.alpha != config.alpha:
            raise ValueError(f"{where}: layer {name} has r={m.r}, alpha={m.alpha} but the adapter config says "
                             f"r={config.r}, alpha={config.alpha}")


def save_adapter(model: nn.Module, directory: str | os.PathLike, config: LoRAConfig,
                 base_model: str | None = None) -> Path:
    """Write the adapter as PEFT does. Pass the decoder itself, so module paths start at `layers.`."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("save_adapter: the model has no LoRA layers (call apply_lora first)")
    _check_layers_match(layers, config, "save_adapter")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, m in layers.items():
        key_a, key_b = _peft_keys(name)
        tensors[key_a] = m.lora_A.detach().cpu().contiguous()  # (R, I)
        tensors[key_b] = m.lora_B.detach().cpu().contiguous()  # (O, R)
    # The fields PEFT's LoraConfig writes that matter for reading the weights back; the rest
    # take PEFT's defaults when peft loads this file.
    peft_config = {
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": base_model,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": sorted(config.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
        "lora_bias": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    atomic_write(directory / ADAPTER_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(directory / ADAPTER_CONFIG,
                  lambda tmp: Path(tmp).write_text(json.dumps(peft_config, indent=2, sort_keys=True) + "\n"))
    return directory


def read_adapter_config(directory: str | os.PathLike) -> LoRAConfig:
    """Read PEFT's adapter_config.json, refusing the options this LoRA does not implement."""
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no adapter config at {path}")
    cfg = json.loads(path.read_text())
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type is {cfg.get('peft_type')!r}, only 'LORA' is supported")
    # Each of these would change the math; loading them as plain LoRA would be silently wrong.
    unsupported = {"bias": "none", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False,
                   "lora_bias": False, "modules_to_save": None, "layers_to_transform": None,
                   "rank_pattern": {}, "alpha_pattern": {}}
    for key, plain in unsupported.items():
        value = cfg.get(key, plain)
        if value != plain and not (plain is None and value in ([], {})):
            raise ValueError(f"{path}: {key}={value!r} is not supported (only {plain!r})")
    targets = cfg.get("target_modules")
    if isinstance(targets, str):
        raise ValueError(f"{path}: target_modules={targets!r} is a regex; only a list of module names is supported")
    return LoRAConfig(r=cfg["r"], alpha=cfg["lora_alpha"], dropout=cfg.get("lora_dropout", 0.0),
                      targets=tuple(targets or ()))


def _strip_prefix(keys: list[str], path: Path) -> dict[str, str]:
    bad = [k for k in keys if not k.startswith(PEFT_PREFIX)]
    if bad:
        raise ValueError(f"{path}: key {bad[0]!r} does not start with {PEFT_PREFIX!r}")
    inner = {k[len(PEFT_PREFIX):]: k for k in keys}
    # An adapter trained on a ...ForCausalLM base carries one more "model." (base_model.model.model.layers...);
    # the decoder mirrors the bare LlamaModel, so that level is dropped when every key has it.
    if inner and all(k.startswith("model.") for k in inner):
        inner = {k[len("model."):]: v for k, v in inner.items()}
    return inner


@torch.no_grad()
def load_adapter(model: nn.Module, directory: str | os.PathLike) -> LoRAConfig:
    """Load a PEFT LoRA adapter into `model` (applying LoRA first if it has none); strict on keys and shapes."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    weights_path = directory / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"no adapter weights at {weights_path}")
    layers = lora_layers(model)
    if not layers:
        apply_lora(model, config)
        layers = lora_layers(model)
    _check_layers_match(layers, config, "load_adapter")
    merged = [name for name, m in layers.items() if m.merged]
    if merged:
        raise ValueError(f"load_adapter: layer {merged[0]} is already merged; load into an unmerged model")
    state = load_file(str(weights_path))
    by_inner = _strip_prefix(list(state), weights_path)
    expected = {}
    for name, m in layers.items():
        expected[f"{name}.lora_A.weight"] = m.lora_A
        expected[f"{name}.lora_B.weight"] = m.lora_B
    missing = [PEFT_PREFIX + k for k in expected if k not in by_inner]
    unexpected = [by_inner[k] for k in by_inner if k not in expected]
    if missing:
        raise ValueError(f"{weights_path}: missing {len(missing)} tensor(s), first: {missing[0]!r}")
    if unexpected:
        raise ValueError(f"{weights_path}: {len(unexpected)} unexpected tensor(s), first: {unexpected[0]!r}")
    for inner, param in expected.items():
        tensor = state[by_inner[inner]]
        if tensor.shape != param.shape:
            raise ValueError(f"{weights_path}: tensor {by_inner[inner]!r} has shape {tuple(tensor.shape)}, "
                             f"the model expects {tuple(param.shape)}")
        param.copy_(tensor)
    return config
