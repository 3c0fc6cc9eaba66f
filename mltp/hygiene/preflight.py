"""Checks of a checkpoint directory that take milliseconds, made before the minutes of work.

Each reads only headers: config.json (parsed and typed by mltp.config), each safetensors file's
header (names, dtypes, shapes: a truncated file is caught here, since its header promises more
bytes than the file holds), and tokenizer.json (every id it can produce must have a row in the
embedding table, else an IndexError after the data has been prepared). Every error names its file.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from tokenizers import Tokenizer as RawTokenizer

from ..config import ModelConfig, read_config

FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def safetensors_header(path: Path) -> dict:
    """The header of a .safetensors file, checked against the file's length."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError(f"{path} is {size} bytes but its header describes {8 + n + end}: the file is truncated or damaged")
    return header


def check_weights(directory: Path) -> None:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"{index} is not a valid safetensors index ({e})") from None
    elif (directory / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{directory} has neither model.safetensors nor model.safetensors.index.json")
    for name in files:
        path = directory / name
        if not path.exists():
            raise FileNotFoundError(f"shard {path} named by {index} is missing")
        for tensor, info in safetensors_header(path).items():
            if tensor != "__metadata__" and info.get("dtype") not in FLOAT_DTYPES:
                raise ValueError(f"tensor '{tensor}' in {path} is {info.get('dtype')}, not floating point: "
                                 "a model's weights must be float (the checkpoint is damaged or not a model)")


def check_tokenizer(directory: Path, config: ModelConfig) -> None:
    path = directory / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer.json in {directory}")
    try:
        raw = RawTokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises its own exception type
        raise ValueError(f"{path} cannot be read as a tokenizer ({e})") from None
    largest = max(raw.get_vocab(with_added_tokens=True).values(), default=-1)
    if largest >= config.vocab_size:
        raise ValueError(f"{path} produces token ids up to {largest}, but {directory / 'config.json'} has vocab_size "
                         f"{config.vocab_size}: the tokenizer belongs to another model")


def check_model_dir(directory: str | Path) -> ModelConfig:
    directory = Path(directory)
    config = read_config(directory)
    check_weights(directory)
    check_tokenizer(directory, config)
    return config
