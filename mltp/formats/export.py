"""Export a saved embedder (RUN/final) as a sentence-transformers directory.

    DIR/
      config.json, model.safetensors    the decoder with the LoRA merged: a Hugging Face base-model
                                        checkpoint (AutoModel names, fp32), loadable by mltp too
      tokenizer.json, tokenizer_config.json   the base model's, unchanged
      mltp_decoder_config.json          how mltp feeds it: EOS id, pad id, max length, padding, attention
      1_MLTPPooling/                    the pooler: pooler_config.json + pooler.safetensors (mltp's own)
      modules.json, config_sentence_transformers.json   the sentence-transformers wiring and prompts

The modules themselves live in mltp.formats.st_module; writing the directory needs neither
sentence-transformers nor transformers. The directory is built beside DIR and moved into place
whole, so a failed export leaves nothing half written.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import resolve_model
from ..hygiene.atomic import follow_umask
from ..hygiene.identity import is_run_dir
from ..embedder import Embedder
from ..model import Decoder
from ..pooling import save_pooler
from ..tokenizer import load_tokenizer

DECODER_CONFIG = "mltp_decoder_config.json"  # read by mltp.formats.st_module.MLTPDecoder
POOLING_FOLDER = "1_MLTPPooling"
# model_type -> transformers' base-model class: the checkpoint holds the body only, no LM head.
BASE_ARCHITECTURES = {"llama": "LlamaModel", "mistral": "MistralModel", "qwen2": "Qwen2Model"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def modules_json() -> list[dict]:
    return [
        {"idx": 0, "name": "0", "path": "", "type": "mltp.formats.st_module.MLTPDecoder"},
        {"idx": 1, "name": "1", "path": POOLING_FOLDER, "type": "mltp.formats.st_module.MLTPPooling"},
    ]


def prompt_prefix(template: str, instruction: str) -> str:
    """The text a sentence-transformers prompt prepends: mltp's template up to `{text}`."""
    head, sep, tail = template.partition("{text}")
    if not sep or tail:
        raise ValueError(f"template {template!r} must end with '{{text}}' to be a sentence-transformers prompt")
    return head.format(instruction=instruction)


def task_prompts(template: str) -> dict[str, str]:
    """The prompts keyed as mteb looks them up for a SentenceTransformer: `{MTEB task}-query` for
    retrieval, whose documents find no prompt and go plain as in eval/, and the MTEB task name for
    every other task, whose texts all get the instruction (eval.tasks holds the instructions and
    MTEB's names; mteb.models.abs_encoder.get_prompt_name, the lookup)."""
    import eval.tasks as tasks

    prompts = {}
    for task in tasks.TASKS.values():
        prefix = prompt_prefix(template, task.instruction)
        if task.family == "retrieval":
            prompts[f"{task.mteb_name}-query"] = prefix
        else:
            prompts[task.mteb_name] = prefix
    return prompts


def decoder_state(model: Decoder) -> dict[str, torch.Tensor]:
    """The plain decoder's tensors by their Hugging Face base-model names (mltp keeps those names)."""
    with torch.device("meta"):
        expected = Decoder(model.config).state_dict()
    state = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"the decoder lacks tensors {missing[:5]} of a {model.config.model_type} checkpoint")
    # lora_A / lora_B are left behind: their product is already inside each weight (merge_lora).
    return {name: state[name].detach().to("cpu", torch.float32).contiguous() for name in expected}


def hf_config(base_dir: Path, model: Decoder) -> dict:
    cfg = json.loads((base_dir / "config.json").read_text())
    model_type = model.config.model_type
    if model_type not in BASE_ARCHITECTURES:
        raise ValueError(f"cannot export a {model_type!r} decoder (known: {sorted(BASE_ARCHITECTURES)})")
    cfg["architectures"] = [BASE_ARCHITECTURES[model_type]]
    cfg.pop("torch_dtype", None)
    cfg["dtype"] = "float32"
    return cfg


def check_target(source: Path, target: Path) -> None:
    """Refuse a target whose replacement (--overwrite) would delete the embedder exported, a run
    directory, or a folder holding either: only an earlier export is ever replaced."""
    src, out = source.resolve(), target.resolve()
    where = ("is" if out == src else "holds" if out in src.parents else "is inside" if src in out.parents else None)
    if where:
        raise ValueError(f"--to {target} {where} the embedder exported ({source}): export to another folder")
    run = next((d for d in (out, *out.parents) if is_run_dir(d)), None)
    if run is not None:
        raise ValueError(f"--to {target} is inside the run directory {run}: export to a folder outside it")
    inner = next((Path(d) for d, _, _ in os.walk(out) if is_run_dir(Path(d))), None) if out.is_dir() else None
    if inner is not None:
        raise ValueError(f"--to {target} holds the run directory {inner}: export to another folder")


def export(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False, log=print) -> Path:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_target(run_dir, out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    embedder = Embedder.load(run_dir)  # fp32, LoRA merged into the base weights
    config = embedder.config
    base_dir = resolve_model(config.model)
    tokenizer = load_tokenizer(base_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_json(tmp / "config.json", hf_config(base_dir, embedder.model))
        save_file(decoder_state(embedder.model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        follow_umask(tmp / "model.safetensors")
        for name in TOKENIZER_FILES:
            if (base_dir / name).exists():
                shutil.copyfile(base_dir / name, tmp / name)
        _write_json(tmp / DECODER_CONFIG, {
            "max_seq_length": config.max_length, "padding_side": config.padding_side, "causal": config.causal,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        })
        save_pooler(embedder.pooler, tmp / POOLING_FOLDER)
        _write_json(tmp / "modules.json", modules_json())
        _write_json(tmp / "config_sentence_transformers.json", {
            "model_type": "SentenceTransformer", "prompts": task_prompts(config.template),
            "default_prompt_name": None, "similarity_fn_name": "cosine",
        })
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an export is an ordinary directory
        if out_dir.exists():  # --overwrite: the old one goes only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / "x")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"exported {run_dir} -> {out_dir} ({embedder.pooler.config.kind} pooler, "
        f"{'causal' if config.causal else 'bidirectional'} attention); load it with "
        f"SentenceTransformer({str(out_dir)!r}, trust_remote_code=True)")
    return out_dir


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")
