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
- A step's forward and backward are `mltp.step.contrastive_backward`: with `mini_batch` it is
  GradCache (mltp.gradcache), and under torchrun each rank embeds its shard of the batch and scores
  it against every rank's candidates (mltp.distributed). Either way the loss and gradients are the
  whole batch's; only the dropout draws differ (each rank has its own stream).

Checkpoints: `<run>/checkpoints/step-NNNNNN/` holds the adapter (PEFT layout), the pooler,
`trainer.pt` (optimiser + schedule state) and `trainer_state.json` (the step and the run's
settings); it is written under a temporary name and renamed, and `<run>/checkpoints/latest`
(written atomically) names the newest complete one. A checkpoint resumes only under the settings
it was made with, and its optimiser must agree with the asked learning rate and weight decay:
a restored state never silently overrides a flag. Ctrl-C finishes the step, writes a checkpoint
and stops (mltp.hygiene.interrupt); every step is appended to train_history.jsonl as it ends
(mltp.hygiene.history).
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from . import distributed
from .hygiene.atomic import atomic_write_json, atomic_write_text
from .data.mixture import Pair, is_symmetric, normalize_text, row_instruction
from .embedder import Embedder
from .hygiene.history import History
from .hygiene.interrupt import TrainingInterrupted, stop_at_step_boundary
from .lora import LoRAConfig, lora_parameters
from .formats.peft import load_adapter
from .loss import info_nce
from .pooling import WEIGHTS_FILE
from .step import BatchTexts, contrastive_backward


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
    # The pooler's layer table (MLTP's W) learns at lr * this: Adam moves an entry by about lr a
    # step, a negligible share of an N(0,1) table over a short run (results/README.md).
    layer_table_lr_mult: float = 1.0
    mini_batch: int | None = None  # GradCache: at most this many texts per forward (mltp.gradcache)


class NonFiniteLossError(RuntimeError):
    pass


class SettingsMismatch(ValueError):
    """A checkpoint made under other settings than the ones asked."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back, or written."""


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


def batch_texts(embedder: Embedder, batch: list[Pair]) -> BatchTexts:
    def fmt(text, row, side_gets_instruction):
        return embedder.format([text], row_instruction(row) if side_gets_instruction else None)[0]

    with_neg = [r for r in batch if r.negative is not None]
    return BatchTexts(
        queries=[fmt(r.query, r, True) for r in batch],
        positives=[fmt(r.positive, r, is_symmetric(r.source)) for r in batch],
        negatives=[fmt(r.negative, r, is_symmetric(r.source)) for r in with_neg],
        pos_keys=[text_key(r.positive) for r in batch],
        neg_keys=[text_key(r.negative) for r in with_neg],
    )


def batch_loss(embedder: Embedder, batch: list[Pair], cfg: TrainConfig) -> tuple[torch.Tensor, int]:
    texts = batch_texts(embedder, batch)
    (q, p, *n), n_tokens = embed_groups(embedder, [texts.queries, texts.positives, texts.negatives], cfg)
    n = n[0] if n else None
    pos_keys = torch.tensor(texts.pos_keys, device=q.device)
    cand_keys = torch.tensor(texts.pos_keys + texts.neg_keys, device=q.device)
    loss = info_nce(q, p, n, scale=cfg.scale, symmetric=cfg.symmetric, pos_keys=pos_keys, cand_keys=cand_keys)
    return loss, n_tokens


def trainable_parameters(embedder: Embedder) -> list[torch.nn.Parameter]:
    return lora_parameters(embedder.model) + [p for p in embedder.pooler.parameters() if p.requires_grad]


def save_checkpoint(embedder, lora_config, optimizer, schedule, step: int, run_dir: Path, cfg: TrainConfig,
                    settings: dict | None = None, provenance: dict | None = None) -> Path:
    root = run_dir / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    embedder.save(tmp, lora_config)
    try:
        torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step}, tmp / "trainer.pt")
    except RuntimeError as e:  # torch reports a full disk as "enforce fail at inline_container.cc"
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write the checkpoint {tmp / 'trainer.pt'} (is the disk full?): {e}") from None
    atomic_write_json(tmp / "trainer_state.json", {"step": step, "train_config": asdict(cfg), "settings": settings,
                                                    "provenance": provenance})
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


def setting_differences(recorded: dict, asked: dict, recorded_as: str) -> list[str]:
    """'name: <recorded_as> X, asked Y' for every setting on which the two disagree (a setting
    missing on one side counts as None, never as a match)."""
    asked = json.loads(json.dumps(asked))  # compare as stored: tuples are lists in JSON
    return [f"{k}: {recorded_as} {recorded.get(k)!r}, asked {asked.get(k)!r}"
            for k in dict.fromkeys([*recorded, *asked]) if recorded.get(k) != asked.get(k)]


def check_checkpoint_settings(checkpoint: Path, settings: dict | None) -> None:
    if settings is None:
        return
    state_file = checkpoint / "trainer_state.json"
    try:
        recorded = json.loads(state_file.read_text()).get("settings")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {state_file} ({e}): the checkpoint is damaged") from None
    if recorded is None:
        return  # made before checkpoints recorded their settings: the run directory's config.json is checked instead
    differ = setting_differences(recorded, settings, "checkpoint")
    if differ:
        raise SettingsMismatch(f"{checkpoint} was made with other settings ({'; '.join(differ)})")


def restore(embedder: Embedder, optimizer, schedule, checkpoint: Path, cfg: TrainConfig | None = None) -> int:
    try:
        load_adapter(embedder.model, checkpoint)
        embedder.pooler.load_state_dict(load_file(str(checkpoint / WEIGHTS_FILE)), strict=True)
        state = torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume from {checkpoint}: {type(e).__name__}: {e}. To start afresh, pass "
                              "another --out or delete the run directory") from None
    if cfg is not None:
        # The optimiser and schedule state carry their own learning rate and weight decay.
        restored = {"lr": sorted({g["initial_lr"] for g in optimizer.param_groups} | set(schedule.base_lrs)),
                    "weight_decay": sorted({g["weight_decay"] for g in optimizer.param_groups} - {0.0})}
        table_lr = {cfg.lr * cfg.layer_table_lr_mult} if len(optimizer.param_groups) > 2 else set()  # the layer table's group
        asked = {"lr": sorted({cfg.lr} | table_lr), "weight_decay": [cfg.weight_decay] if cfg.weight_decay else []}
        if restored != asked:
            raise SettingsMismatch(f"{checkpoint}: its optimiser state was made with {restored}, asked {asked}")
    return int(state["step"])


def layer_table_movement(start: list[torch.Tensor], end: list[torch.nn.Parameter]) -> dict | None:
    """How far the layer table moved from its init: ||end - start|| / ||start||, over all its entries."""
    if not end:
        return None
    s = torch.cat([t.flatten().double() for t in start])
    e = torch.cat([t.detach().flatten().double() for t in end])
    norm_start = float(s.norm())
    return {"norm_start": norm_start, "norm_end": float(e.norm()), "delta_norm": float((e - s).norm()),
            "relative_change": float((e - s).norm()) / norm_start if norm_start > 0 else None}


def train(
    embedder: Embedder,
    rows: list[Pair],
    cfg: TrainConfig,
    lora_config: LoRAConfig,
    run_dir: str | Path,
    *,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
    settings: dict | None = None,
    provenance: dict | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train in place; return the run's training record (over every session, from its history).

    `settings`: what identifies the run, stored in each checkpoint; a checkpoint made under other
    settings is refused. `provenance` (code revision, data hashes) is stored beside them and only
    reported when it differs: a commit that touches no numbers must not forbid resuming.
    `stop_after` ends early (tests use it to simulate a kill); `on_step(done)` runs after each
    step (tests raise KeyboardInterrupt from it to simulate Ctrl-C). Under torchrun every rank
    calls this: each embeds its shard of every batch (mltp.distributed); rank 0 alone logs and writes.
    """
    run_dir = Path(run_dir)
    world = distributed.world()
    if not world.main:
        log = lambda message: None  # noqa: E731
    params = trainable_parameters(embedder)
    if not params:
        raise ValueError(f"nothing to train: the {embedder.pooler.config.kind} pooler has no parameters and no LoRA is applied")
    # Weight decay on matrices only, as usual; biases, norms and the layer table are left alone
    # (decay would pull the table towards zero, i.e. towards the ablation it is compared with).
    table = embedder.pooler.layer_table()
    in_table = {id(p) for p in table}
    decay = [p for p in params if p.dim() >= 2 and id(p) not in in_table]
    no_decay = [p for p in params if p.dim() < 2 and id(p) not in in_table]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if table:
        groups.append({"params": table, "weight_decay": 0.0, "lr": cfg.lr * cfg.layer_table_lr_mult})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    table_start = [p.detach().clone() for p in table]  # the seed's init, also when resuming
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    plan = plan_batches(rows, cfg)

    start = 0
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        check_checkpoint_settings(checkpoint, settings)
        start = restore(embedder, optimizer, schedule, checkpoint, cfg)
        if start > cfg.steps:
            raise SettingsMismatch(f"{checkpoint} is at step {start}, past the {cfg.steps} steps asked")
        log(f"resumed from {checkpoint} (step {start}/{cfg.steps})")
        try:
            before = json.loads((checkpoint / "trainer_state.json").read_text()).get("provenance") or {}
        except (OSError, ValueError):
            before = {}
        changed = [k for k in (provenance or {}) if k in before and before[k] != provenance[k]]
        if changed:
            log(f"note: the checkpoint's {', '.join(changed)} differ from this session's (recorded in its trainer_state.json)")
    history = History(run_dir, resume_at=start, write=world.main)
    distributed.broadcast_parameters(params)
    embedder.train()
    tokens, t0 = 0, time.perf_counter()
    last_saved, saved_step, done, at_boundary = checkpoint, start, start, True
    with stop_at_step_boundary(log) as stop:
        try:
            for step in range(start, cfg.steps):
                if stop_after is not None and step >= stop_after:
                    break
                at_boundary = False
                tokens, done = _one_step(embedder, rows, plan, cfg, optimizer, schedule, params, history, step,
                                         tokens, t0, start, last_saved, log, world)
                at_boundary = True
                if done % cfg.save_every == 0 or done == cfg.steps:
                    if world.main:
                        save_checkpoint(embedder, lora_config, optimizer, schedule, done, run_dir, cfg, settings, provenance)
                    distributed.barrier()  # every rank goes on once the checkpoint is complete
                    last_saved, saved_step = run_dir / "checkpoints" / f"step-{done:06d}", done
                if on_step is not None:
                    on_step(done)
                if stop.requested:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            # Only at a step boundary is the state whole; a second Ctrl-C mid-step keeps the last checkpoint.
            if at_boundary and done > saved_step and world.main:
                last_saved = save_checkpoint(embedder, lora_config, optimizer, schedule, done, run_dir, cfg, settings,
                                             provenance)
            raise TrainingInterrupted(done if at_boundary else saved_step, cfg.steps, last_saved) from None
    embedder.eval()
    return {"layer_table": layer_table_movement(table_start, table), **history.summary(), "ranks": world.size}


def _one_step(embedder, rows, plan, cfg, optimizer, schedule, params, history, step, tokens, t0, start, last_saved,
              log, world) -> tuple[int, int]:
    """One optimiser step, appended to the history; returns (tokens so far, steps done)."""
    t_step, step_tokens = time.perf_counter(), 0
    # Dropout masks depend on (seed, step, rank) only; one process keeps the (seed, step) seed.
    torch.manual_seed((cfg.seed * 1_000_003 + step) * world.size + world.rank)
    optimizer.zero_grad(set_to_none=True)
    step_loss = 0.0
    for micro in range(cfg.grad_accum):
        batch = [rows[i] for i in distributed.shard(plan[step * cfg.grad_accum + micro], world)]
        loss, n_tokens = contrastive_backward(embedder, batch_texts(embedder, batch), cfg)  # mltp.step
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {step + 1}: stopping. The last good checkpoint is "
                f"{last_saved or 'none (no checkpoint was written yet)'}; lower --lr or check the data"
            )
        step_loss += loss.item() / cfg.grad_accum
        step_tokens += n_tokens
    distributed.average_gradients(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    schedule.step()
    tokens += step_tokens
    history.append({"step": step + 1, "loss": step_loss, "lr": schedule.get_last_lr()[0], "grad_norm": float(grad_norm),
                    "tokens": step_tokens, "seconds": time.perf_counter() - t_step})
    done = step + 1
    if done % cfg.log_every == 0 or done == cfg.steps:
        elapsed = time.perf_counter() - t0
        rate = tokens / max(elapsed, 1e-9)
        eta = (cfg.steps - done) * elapsed / max(done - start, 1)
        recent = history.rows[-cfg.log_every:]
        log(
            f"step {done:>5}/{cfg.steps}  loss {sum(h['loss'] for h in recent) / len(recent):.4f}  "
            f"lr {recent[-1]['lr']:.2e}  {rate:,.0f} tok/s  eta {eta / 60:.1f} min"
        )
    return tokens, done
