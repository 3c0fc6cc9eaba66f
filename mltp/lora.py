"""Hand-written LoRA (Hu et al. 2021, arXiv 2106.09685), the adapter MLTP fine-tunes the decoder with.

The paper (arXiv 2409.02727, training setup) puts LoRA r=16, alpha=32, dropout 0.1 on the seven
projections q,k,v,o,gate,up,down. One wrapped linear layer computes

        x ──┬──────────────── W (out, in), b ─────────────────┐   frozen, names kept: `weight`, `bias`
            │                                                 + ──► y
            └── dropout ──► A (r, in) ──► B (out, r) ── · α/r ┘   trained: `lora_A`, `lora_B`

    y = x Wᵀ + b + dropout(x) Aᵀ Bᵀ · (alpha / r)

A starts like an nn.Linear weight (kaiming-uniform, a=sqrt(5)) and B starts at zero, so a fresh
adapter is an exact no-op (PEFT `reset_lora_parameters`, loralib `layers.py`). `merge_lora` folds
B A · alpha/r into W once, explicitly; it is idempotent and never happens as a side effect of
`.eval()`/`.train()` (litgpt `lora.py` merges the same way).

Shape letters: N = any leading dims (batch, time), I = in_features, O = out_features, R = rank r.

Deviations from PEFT, on purpose:
- one adapter per layer, no adapter names, no DoRA / rsLoRA / rank patterns / LoRA on biases;
- the adapter weights live in fp32 (or the base dtype if wider) and are cast to the input's dtype
  in the forward pass, so the LoRA math runs in whatever dtype the caller (or autocast) chose;
- no unmerge: subtracting B A again would not restore a bf16 base weight bit for bit. The merged
  flag lives on the module, not in the state_dict: save a merged model as a plain checkpoint.

Adapters are saved and loaded in PEFT's layout by mltp.formats.peft.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 16  # paper: rank 16
    alpha: float = 32  # paper: alpha 32, so the update is scaled by alpha / r = 2
    dropout: float = 0.1  # paper: dropout 0.1 on the adapter input only
    # paper: every attention and MLP projection; matched like PEFT's list form: a module whose
    # name equals a target or ends with "." + target.
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoRAConfig.r must be a positive int, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRAConfig.alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.targets, str) or not self.targets:
            # A bare string would be iterated letter by letter: refuse it instead.
            raise ValueError(f"LoRAConfig.targets must be a non-empty list of module names, got {self.targets!r}")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class LoRALinear(nn.Module):
    """An nn.Linear plus a trainable low-rank update; built from the layer it replaces."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        # The very same Parameter objects, registered under the same names, so state_dict keys
        # (`...q_proj.weight`) and any optimizer or tie that refers to them stay valid.
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        # fp32 at least: PEFT also keeps adapters of a bf16 base in fp32 (autocast_adapter_dtype).
        lora_dtype = torch.promote_types(base.weight.dtype, torch.float32)
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=lora_dtype, device=device))  # (R, I)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=lora_dtype, device=device))  # (O, R)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear / PEFT; B = 0 keeps it a no-op
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.train(base.training)  # a layer swapped into an eval-mode model must not start dropping out

    def forward(self, x: torch.Tensor, dropped: torch.Tensor | None = None) -> torch.Tensor:  # (N, I) -> (N, O)
        """`dropped`: dropout(x), when the caller draws the mask itself (mltp.packed: the padded
        grid's mask on the real tokens, so that skipping padding keeps a seed's masks)."""
        y = F.linear(x, self.weight, self.bias)  # (N, O)
        if self.merged:
            return y  # B A already lives inside W
        # Cast to the input's dtype; under autocast F.linear recasts to the autocast dtype anyway.
        a = self.lora_A.to(x.dtype)  # (R, I)
        b = self.lora_B.to(x.dtype)  # (O, R)
        dropped = self.lora_dropout(x) if dropped is None else dropped  # (N, I)
        update = F.linear(F.linear(dropped, a), b)  # (N, I) -> (N, R) -> (N, O)
        # Not torch.add(..., alpha=scaling): inductor drops that alpha after a matmul (bench/README.md).
        return y + update * self.scaling

    @property
    def drops_out(self) -> bool:
        """Whether a forward now draws a dropout mask."""
        return self.training and not self.merged and isinstance(self.lora_dropout, nn.Dropout)

    @torch.no_grad()
    def merge(self) -> bool:
        """Fold B A · alpha/r into W; returns False (and changes nothing) if already merged."""
        if self.merged:
            return False
        # In the adapter's dtype (fp32 or wider), rounded once to the base dtype on the add.
        delta = (self.lora_B @ self.lora_A) * self.scaling  # (O, R) @ (R, I) -> (O, I)
        if not torch.isfinite(delta).all():
            raise ValueError("LoRA update contains NaN/inf; refusing to merge it into the base weight")
        self.weight.add_(delta.to(self.weight.dtype))
        self.merged = True
        return True

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha}, bias={self.bias is not None}, merged={self.merged}")


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    # PEFT's rule for a list of target names (tuners_utils.check_target_module_exists).
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Swap every targeted nn.Linear for a LoRALinear in place; freeze all other parameters."""
    if lora_layers(model):
        raise ValueError("apply_lora: the model already has LoRA layers (apply_lora was called twice?)")
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(name, config.targets)]
    if not names:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"apply_lora: no nn.Linear matches targets {list(config.targets)}; "
                         f"the model's linear layers are named {linears}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), config.r, config.alpha, config.dropout))
    return names


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter weights, in module order: what the optimizer trains."""
    return [p for m in lora_layers(model).values() for p in (m.lora_A, m.lora_B)]


def merge_lora(model: nn.Module) -> list[str]:
    """Merge every LoRA layer into its base weight; returns the names that were not merged yet."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("merge_lora: the model has no LoRA layers")
    return [name for name, m in layers.items() if m.merge()]
