"""Contrastive fine-tuning of LoRA + pooler, resumable, with atomic checkpoints.

The official recipe (yixuantt/PoolingAndAttn, README.md's training command): InfoNCE at scale 20 over in-batch positives + one hard negative,
AdamW with linear warm-up and decay, weight decay 0.01, LoRA r=16 / alpha=32 / dropout 0.1 on all
projections, the pooler fully trainable, bf16. What differs here, and why:
- Steps, batch size, learning rate and sequence length are arguments: the paper's 1000 steps of
  batch 2048 on 1.4M rows do not fit a 2-core CPU, and a freshly initialised pooler needs a larger
  learning rate than 1e-5 to move in a few hundred steps.
- Batches are bucketed by length (see `plan_batches`), so a batch pads little.
- Every step reseeds torch from (seed, step), and the data plan depends only on the seed: a run
  resumed from a checkpoint takes exactly the steps the uninterrupted run would have.
- `joint_forward` embeds a step's queries, positives and hard negatives in ONE padded forward
  instead of three. The same embeddings (padding is masked; positions count real tokens) at a
  third of the kernel launches, for more padded tokens (the counts: bench/README.md). On a GPU,
  where the default model waits on launches, that is the right trade; on a CPU, which waits on
  arithmetic, it is not. Dropout masks are drawn for the joint batch, so the two modes train on different
  (equally valid) dropout noise, like two seeds.

Checkpoints: `<run>/checkpoints/step-NNNNNN/` holds the adapter (PEFT layout), the pooler and
`trainer.pt` (optimiser + schedule state); it is written under a temporary name and renamed, and
`<run>/checkpoints/latest` (written atomically) names the newest complete one.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from .atomic import atomic_write_json, atomic_write_text
from .data import Pair, instruction_for, is_symmetric, normalize_text
from .embedder import Embedder
from .lora import LoRAConfig, load_adapter, lora_parameters
from .loss import info_nce
from .pooling import WEIGHTS_FILE


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 32  # queries per step (each brings a positive and maybe a hard negative)
    grad_accum: int = 1
    lr: float = 2e-4
    warmup: int = 30
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128  # tokens per training text (the official code: 512)
    scale: float = 20.0  # InfoNCE logit scale = 1 / temperature 0.05
    symmetric: bool = False
    seed: int = 0
    save_every: int = 100
    log_every: int = 10
    bucket: int = 16  # batches per length bucket (1 = no bucketing)
    joint_forward: bool = False  # one forward for queries + positives + negatives (see above)


class NonFiniteLossError(RuntimeError):
    pass


def text_key(text: str) -> int:
    """A stable 63-bit id of a text (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.blake2b(normalize_text(text).encode(), digest_size=8).digest(), "big") >> 1


def plan_batches(rows: list[Pair], cfg: TrainConfig) -> list[list[int]]:
    """Row indices for every micro-batch of the run, from the seed alone.

    Each epoch is shuffled, cut into groups of `bucket` batches, sorted by query length inside a
    group, and cut into batches: little padding, while batches still mix sources and lengths
    across the run. Epochs repeat as needed.
    """
    need = cfg.steps * cfg.grad_accum
    if len(rows) < cfg.batch_size:
        raise ValueError(f"the training mixture has {len(rows)} rows, fewer than one batch of {cfg.batch_size}")
    rng = random.Random(cfg.seed)
    plan: list[list[int]] = []
    while len(plan) < need:
        order = list(range(len(rows)))
        rng.shuffle(order)
        group = cfg.batch_size * max(cfg.bucket, 1)
        epoch = []
        for g in range(0, len(order) - cfg.batch_size + 1, group):
            chunk = sorted(order[g:g + group], key=lambda i: len(rows[i].query) + len(rows[i].positive))
            epoch += [chunk[b:b + cfg.batch_size] for b in range(0, len(chunk) - cfg.batch_size + 1, cfg.batch_size)]
        rng.shuffle(epoch)
        plan += epoch
    return plan[:need]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    # Linear warm-up to the peak, then linear decay to zero at the last step.
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup))


def embed_groups(embedder: Embedder, groups: list[list[str]], cfg: TrainConfig) -> tuple[list[torch.Tensor], int]:
    """One (n_i, D) embedding per non-empty group of texts, and the count of real tokens.

    Separate: one padded forward per group. Joint: all groups padded together, one forward, split.
    """
    rows = [embedder.tokenizer.encode_ids(texts, cfg.max_length) for texts in groups if texts]
    batches = [[r for g in rows for r in g]] if cfg.joint_forward else rows
    out, n_tokens = [], 0
    for batch in batches:
        ids, mask = embedder.batch(batch)  # (N, T), left-padded
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.device.type == "cuda"):
            out.append(embedder(ids, mask))  # (N, D)
        n_tokens += sum(len(r) for r in batch)
    if cfg.joint_forward:
        out = list(out[0].split([len(g) for g in rows]))
    return out, n_tokens


def batch_loss(embedder: Embedder, batch: list[Pair], cfg: TrainConfig) -> tuple[torch.Tensor, int]:
    def fmt(text, row, side_gets_instruction):
        return embedder.format([text], instruction_for(row.source) if side_gets_instruction else None)[0]

    queries = [fmt(r.query, r, True) for r in batch]
    positives = [fmt(r.positive, r, is_symmetric(r.source)) for r in batch]
    with_neg = [r for r in batch if r.negative is not None]
    negatives = [fmt(r.negative, r, is_symmetric(r.source)) for r in with_neg]

    (q, p, *n), n_tokens = embed_groups(embedder, [queries, positives, negatives], cfg)
    n = n[0] if n else None
    pos_keys = torch.tensor([text_key(r.positive) for r in batch], device=q.device)
    cand_keys = torch.tensor([text_key(r.positive) for r in batch] + [text_key(r.negative) for r in with_neg], device=q.device)
    loss = info_nce(q, p, n, scale=cfg.scale, symmetric=cfg.symmetric, pos_keys=pos_keys, cand_keys=cand_keys)
    return loss, n_tokens


def trainable_parameters(embedder: Embedder) -> list[torch.nn.Parameter]:
    return lora_parameters(embedder.model) + [p for p in embedder.pooler.parameters() if p.requires_grad]


def save_checkpoint(embedder, lora_config, optimizer, schedule, step: int, run_dir: Path, cfg: TrainConfig) -> Path:
    root = run_dir / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    embedder.save(tmp, lora_config)
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step}, tmp / "trainer.pt")
    atomic_write_json(tmp / "trainer_state.json", {"step": step, "train_config": asdict(cfg)})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(root / "latest", final.name + "\n")
    for old in root.glob("step-*"):  # keep only the newest complete checkpoint
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / "trainer.pt").exists() else None


def restore(embedder: Embedder, optimizer, schedule, checkpoint: Path) -> int:
    load_adapter(embedder.model, checkpoint)
    embedder.pooler.load_state_dict(load_file(str(checkpoint / WEIGHTS_FILE)), strict=True)
    state = torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return int(state["step"])


def train(
    embedder: Embedder,
    rows: list[Pair],
    cfg: TrainConfig,
    lora_config: LoRAConfig,
    run_dir: str | Path,
    *,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> dict:
    """Train in place; return a summary. `stop_after` ends early (tests use it to simulate a kill)."""
    run_dir = Path(run_dir)
    params = trainable_parameters(embedder)
    if not params:
        raise ValueError(f"nothing to train: the {embedder.pooler.config.kind} pooler has no parameters and no LoRA is applied")
    # Weight decay on matrices only, as usual; biases, norms and the layer table are left alone.
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    plan = plan_batches(rows, cfg)

    start = 0
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        start = restore(embedder, optimizer, schedule, checkpoint)
        log(f"resumed from {checkpoint} (step {start}/{cfg.steps})")
    embedder.train()
    history, tokens, t0 = [], 0, time.perf_counter()
    last_saved = checkpoint
    for step in range(start, cfg.steps):
        if stop_after is not None and step >= stop_after:
            break
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout masks depend on (seed, step) only
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            batch = [rows[i] for i in plan[step * cfg.grad_accum + micro]]
            loss, n_tokens = batch_loss(embedder, batch, cfg)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at step {step + 1}: stopping. The last good checkpoint is "
                    f"{last_saved or 'none (no checkpoint was written yet)'}; lower --lr or check the data"
                )
            (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
            tokens += n_tokens
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        schedule.step()
        history.append({"step": step + 1, "loss": step_loss, "lr": schedule.get_last_lr()[0], "grad_norm": float(grad_norm)})
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            elapsed = time.perf_counter() - t0
            rate = tokens / max(elapsed, 1e-9)
            eta = (cfg.steps - done) * elapsed / max(done - start, 1)
            recent = history[-cfg.log_every:]
            log(
                f"step {done:>5}/{cfg.steps}  loss {sum(h['loss'] for h in recent) / len(recent):.4f}  "
                f"lr {history[-1]['lr']:.2e}  {rate:,.0f} tok/s  eta {eta / 60:.1f} min"
            )
        if done % cfg.save_every == 0 or done == cfg.steps:
            last_saved = save_checkpoint(embedder, lora_config, optimizer, schedule, done, run_dir, cfg)
    embedder.eval()
    elapsed = time.perf_counter() - t0
    with open(run_dir / "train_history.jsonl", "a") as f:  # appended per (resumed) session
        for h in history:
            f.write(json.dumps(h) + "\n")
    return {
        "steps_run": len(history),
        "first_step": start + 1,
        "final_loss": history[-1]["loss"] if history else math.nan,
        "seconds": elapsed,
        "tokens": tokens,
        "tokens_per_second": tokens / max(elapsed, 1e-9),
    }
