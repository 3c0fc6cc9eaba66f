"""Contrastive fine-tuning of LoRA + pooler, resumable, with atomic checkpoints.

The official recipe (yixuantt/PoolingAndAttn, README.md's training command): InfoNCE at scale 20
over in-batch positives + one hard negative, AdamW with linear warm-up and decay, weight decay
0.01, LoRA r=16 / alpha=32 / dropout 0.1 on all projections, the pooler fully trainable, bf16.
What differs here, and why:
- Steps, batch size, learning rate and sequence length are arguments: the paper's 1000 steps of
  batch 2048 on 1.4M rows do not fit a 2-core CPU, and a freshly initialised pooler needs a larger
  learning rate than 1e-5 to move in a few hundred steps.
- Batches are bucketed by length (see `plan_batches`), so a batch pads little.
- Every step reseeds torch from (seed, step), and the data plan depends only on the seed: a run
  resumed from a checkpoint takes exactly the steps the uninterrupted run would have.
- A step is `mltp.step.contrastive_step` (embed, InfoNCE, `loss.backward()`), or its GradCache form
  with `mini_batch` (mltp.gradcache); under torchrun each rank embeds its shard of the batch and
  scores it against every rank's candidates (mltp.distributed). Either way the loss and gradients
  are the whole batch's; only the dropout draws differ (each rank has its own stream), as they do
  between one joint forward a step and three (`joint_forward`), like two seeds.

Checkpoints: `<run>/checkpoints/step-NNNNNN/` holds the adapter (PEFT layout), the pooler,
`trainer.pt` (optimiser + schedule state) and `trainer_state.json` (the step and the run's
settings); it is written under a temporary name and renamed, and `<run>/checkpoints/latest`
(written atomically) names the newest complete one. The command line resumes a checkpoint only
under the settings it was made with (mltp.hygiene.identity). Ctrl-C finishes the step, writes a
checkpoint and stops (mltp.hygiene.interrupt); every step is appended to train_history.jsonl as it
ends (mltp.hygiene.history).
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
from .data.mixture import Pair, is_symmetric, normalize_text, row_instruction
from .embedder import Embedder
from .formats.peft import load_adapter
from .gradcache import gradcache_step
from .hygiene.atomic import atomic_write_json, atomic_write_text
from .hygiene.history import History
from .hygiene.interrupt import TrainingInterrupted, stop_at_step_boundary
from .lora import LoRAConfig, lora_parameters
from .pooling import WEIGHTS_FILE
from .step import BatchTexts, contrastive_step


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
    """The checkpoint checkpoints/latest names (None: the run saved none yet). A pointer to a step
    that is not there whole is refused: starting over would delete the checkpoints beside it."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    if (path / "trainer.pt").exists():
        return path
    whole = sorted(p.name for p in pointer.parent.glob("step-*") if (p / "trainer.pt").exists())
    hint = (f"the newest whole checkpoint here is {whole[-1]}: write that name into {pointer} to resume from it"
            if whole else "no whole checkpoint is here: delete checkpoints/ to start afresh")
    raise CheckpointError(f"{pointer} names {path.name}, which is missing or incomplete; {hint}, or pass another --out")


def restore(embedder: Embedder, optimizer, schedule, checkpoint: Path) -> int:
    try:
        load_adapter(embedder.model, checkpoint)
        embedder.pooler.load_state_dict(load_file(str(checkpoint / WEIGHTS_FILE)), strict=True)
        state = torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume from {checkpoint}: {type(e).__name__}: {e}. To start afresh, pass "
                              "another --out or delete the run directory") from None
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


def optimizer_for(embedder: Embedder, params: list[torch.nn.Parameter], cfg: TrainConfig):
    """AdamW and its schedule; also the pooler's layer table, which has a group of its own."""
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
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg)), table


def train_settings(cfg: TrainConfig) -> dict:
    """The settings record of a run made through `train` alone: its TrainConfig, less the cadence of
    logs and checkpoints (the command line records its own, mltp.cli.settings.run_settings)."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("save_every", "log_every")}


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
    """Train in place, resuming from run_dir's latest checkpoint; return the run's training record
    (over every session, from its history).

    `settings`: the run's settings record (default `train_settings(cfg)`), stored in each checkpoint.
    A checkpoint resumes as it is: check first that it was made with these settings
    (mltp.hygiene.identity.check_run_dir, as the command line does before any work). `provenance`
    (code revision, data hashes) is stored beside them and only reported when it differs: a commit
    that touches no numbers must not forbid resuming. `stop_after` ends early (tests use it to
    simulate a kill); `on_step(done)` runs after each step (tests raise KeyboardInterrupt from it
    to simulate Ctrl-C). Under torchrun every rank calls this: each embeds its shard of every batch
    (mltp.distributed); rank 0 alone logs and writes.
    """
    params = trainable_parameters(embedder)
    if not params:
        raise ValueError(f"nothing to train: the {embedder.pooler.config.kind} pooler has no parameters and no LoRA is applied")
    optimizer, schedule, table = optimizer_for(embedder, params, cfg)
    table_start = [p.detach().clone() for p in table]  # the seed's init, also when resuming
    loop = Loop(embedder, rows, cfg, lora_config, Path(run_dir), optimizer, schedule, params,
                settings if settings is not None else train_settings(cfg), provenance, log)
    loop.run(stop_after, on_step)
    embedder.eval()
    return {"layer_table": layer_table_movement(table_start, table), **loop.history.summary(), "ranks": loop.world.size}


class Loop:
    """The steps of one training session, from the run's latest checkpoint to cfg.steps."""

    def __init__(self, embedder, rows, cfg, lora_config, run_dir, optimizer, schedule, params, settings, provenance, log):
        self.embedder, self.rows, self.cfg, self.lora_config, self.run_dir = embedder, rows, cfg, lora_config, run_dir
        self.optimizer, self.schedule, self.params = optimizer, schedule, params
        self.settings, self.provenance = settings, provenance
        self.world = distributed.world()
        self.log = log if self.world.main else (lambda message: None)
        self.plan = plan_batches(rows, cfg)
        self.last_saved = latest_checkpoint(run_dir)
        self.start = self.resume(self.last_saved) if self.last_saved is not None else 0
        self.history = History(run_dir, resume_at=self.start, write=self.world.main)
        self.tokens, self.t0 = 0, time.perf_counter()
        self.warned_unlearnable = False

    def resume(self, checkpoint: Path) -> int:
        start = restore(self.embedder, self.optimizer, self.schedule, checkpoint)
        if start > self.cfg.steps:
            raise CheckpointError(f"{checkpoint} is at step {start}, past the {self.cfg.steps} steps asked")
        self.log(f"resumed from {checkpoint} (step {start}/{self.cfg.steps})")
        try:
            before = json.loads((checkpoint / "trainer_state.json").read_text()).get("provenance") or {}
        except (OSError, ValueError):
            before = {}
        changed = [k for k in (self.provenance or {}) if k in before and before[k] != self.provenance[k]]
        if changed:
            self.log(f"note: the checkpoint's {', '.join(changed)} differ from this session's (recorded in its trainer_state.json)")
        return start

    def run(self, stop_after: int | None, on_step: Callable[[int], None] | None) -> None:
        distributed.broadcast_parameters(self.params)
        self.embedder.train()
        saved_step, done, at_boundary = self.start, self.start, True
        with stop_at_step_boundary(self.log) as stop:
            try:
                for step in range(self.start, self.cfg.steps if stop_after is None else min(stop_after, self.cfg.steps)):
                    at_boundary = False
                    done = self.step(step)
                    at_boundary = True
                    if done % self.cfg.save_every == 0 or done == self.cfg.steps:
                        saved_step = self.save(done)
                    if on_step is not None:
                        on_step(done)
                    if stop.requested:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                # Only at a step boundary is the state whole; a second Ctrl-C mid-step keeps the last checkpoint.
                if at_boundary and done > saved_step and self.world.main:  # no barrier: other ranks may be gone
                    self.last_saved = save_checkpoint(self.embedder, self.lora_config, self.optimizer, self.schedule,
                                                      done, self.run_dir, self.cfg, self.settings, self.provenance)
                raise TrainingInterrupted(done if at_boundary else saved_step, self.cfg.steps, self.last_saved) from None

    def save(self, done: int) -> int:
        if self.world.main:
            save_checkpoint(self.embedder, self.lora_config, self.optimizer, self.schedule, done, self.run_dir, self.cfg,
                            self.settings, self.provenance)
        distributed.barrier()  # every rank goes on once the checkpoint is complete
        self.last_saved = self.run_dir / "checkpoints" / f"step-{done:06d}"
        return done

    def step(self, step: int) -> int:
        """One optimiser step, appended to the history; returns the steps done."""
        cfg, t_step = self.cfg, time.perf_counter()
        # Dropout masks depend on (seed, step, rank) only; one process keeps the (seed, step) seed.
        torch.manual_seed((cfg.seed * 1_000_003 + step) * self.world.size + self.world.rank)
        self.optimizer.zero_grad(set_to_none=True)
        step_loss, step_tokens = 0.0, 0
        for micro in range(cfg.grad_accum):
            self.check_learnable([self.rows[i] for i in self.plan[step * cfg.grad_accum + micro]], step)
            batch = [self.rows[i] for i in distributed.shard(self.plan[step * cfg.grad_accum + micro], self.world)]
            # The step (mltp.step): embed, InfoNCE, loss.backward(); GradCache, the same step in mini-batches.
            step_fn = gradcache_step if cfg.mini_batch else contrastive_step
            loss, n_tokens = step_fn(self.embedder, batch_texts(self.embedder, batch), cfg)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at step {step + 1}: stopping. The last good checkpoint is "
                    f"{self.last_saved or 'none (no checkpoint was written yet)'}; lower --lr or check the data")
            step_loss += loss.item() / cfg.grad_accum
            step_tokens += n_tokens
        distributed.average_gradients(self.params)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()
        self.tokens += step_tokens
        self.history.append({"step": step + 1, "loss": step_loss, "lr": self.schedule.get_last_lr()[0],
                             "grad_norm": float(grad_norm), "tokens": step_tokens, "seconds": time.perf_counter() - t_step})
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            self.log_progress(step + 1)
        return step + 1

    def check_learnable(self, batch: list[Pair], step: int) -> None:
        """Warn (once a run) of a batch whose candidates are all one text: duplicate rows are false
        negatives of each other (masked, mltp.loss), so such a batch has a loss of 0 and teaches nothing."""
        keys = {text_key(r.positive) for r in batch} | {text_key(r.negative) for r in batch if r.negative is not None}
        if len(keys) < 2 and not self.warned_unlearnable:
            self.warned_unlearnable = True
            self.log(f"warning: step {step + 1}: all {len(batch)} rows of the batch have the same positive text and "
                     "no other candidate, so there is nothing to learn from it (loss 0); check the training data "
                     "for duplicate rows")

    def log_progress(self, done: int) -> None:
        elapsed = time.perf_counter() - self.t0
        eta = (self.cfg.steps - done) * elapsed / max(done - self.start, 1)
        recent = self.history.rows[-self.cfg.log_every:]
        self.log(f"step {done:>5}/{self.cfg.steps}  loss {sum(h['loss'] for h in recent) / len(recent):.4f}  "
                 f"lr {recent[-1]['lr']:.2e}  {self.tokens / max(elapsed, 1e-9):,.0f} tok/s  eta {eta / 60:.1f} min")
