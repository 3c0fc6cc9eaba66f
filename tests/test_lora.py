"""mltp.lora: no-op start, merge, frozen base, PEFT file format and PEFT numerical parity.

The parity fixtures (tests/fixtures/lora/) come from transformers + peft via
scripts/fixtures/make_lora_fixtures.py; that script also checks that peft loads save_adapter's output.
"""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import mltp
from closeness import FLOAT32_EPS, assert_close_to_scale
from mltp.formats.peft import load_adapter, save_adapter
from mltp.lora import LoRAConfig, LoRALinear, apply_lora, lora_layers, lora_parameters, merge_lora

SEVEN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(6, 5)
        self.up_proj = nn.Linear(5, 7, bias=False)
        self.head = nn.Linear(7, 3)  # not a target: must stay a plain, frozen nn.Linear

    def forward(self, x):
        return self.head(torch.tanh(self.up_proj(torch.tanh(self.q_proj(x)))))


@pytest.fixture
def base_dir(fixtures_dir):
    return fixtures_dir / "lora" / "base"


@pytest.fixture
def batch(fixtures_dir):
    ref = load_file(str(fixtures_dir / "lora" / "hidden_states.safetensors"))
    return ref["input_ids"], ref["attention_mask"]


def randomize_adapter(model, seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * std)


def real_tokens_close(states, ref_states, mask, rel=1e-5):
    # Each state to 1e-5 of its largest entry (~80 float32 ulps, tests/closeness.py): room for
    # another order of the same sums through a few blocks; an adapter left out moves it by percents.
    real = mask.bool()
    for i, (h, r) in enumerate(zip(states, ref_states)):
        assert_close_to_scale(h[real], r[real], rel, f"hidden state {i}")


# ------------------------------------------------------------------ a fresh adapter is a no-op

def test_fresh_adapter_is_exact_noop_on_small_module_even_with_dropout_on():
    torch.manual_seed(0)
    toy = Toy()
    x = torch.randn(4, 3, 6)
    before = toy(x)
    keys_before = set(toy.state_dict())
    q_weight = toy.q_proj.weight
    names = apply_lora(toy, LoRAConfig(r=2, alpha=4, dropout=0.5, targets=("q_proj", "up_proj")))
    assert names == ["q_proj", "up_proj"]
    assert isinstance(toy.q_proj, LoRALinear) and type(toy.head) is nn.Linear
    assert toy.q_proj.weight is q_weight  # the very same Parameter, not a copy
    assert toy.q_proj.training  # dropout is live here, yet B = 0 keeps the output exact
    assert torch.equal(toy(x), before)
    # Base names kept; only the adapter tensors are new.
    assert set(toy.state_dict()) - keys_before == {"q_proj.lora_A", "q_proj.lora_B", "up_proj.lora_A", "up_proj.lora_B"}
    assert keys_before <= set(toy.state_dict())
    assert torch.count_nonzero(toy.q_proj.lora_A) == toy.q_proj.lora_A.numel()  # A is initialised, B is zero
    assert torch.count_nonzero(toy.q_proj.lora_B) == 0


def test_a_is_initialised_like_peft_kaiming_uniform_and_base_is_frozen():
    # kaiming_uniform(a=sqrt(5)) on (r, in) draws from U(-1/sqrt(in), 1/sqrt(in)).
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(400, 3), r=64, alpha=64)
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    bound = 1 / math.sqrt(400)
    assert layer.lora_A.abs().max() <= bound
    assert layer.lora_A.abs().max() > 0.95 * bound
    assert abs(layer.lora_A.std().item() - bound / math.sqrt(3)) < 0.02 * bound


def test_fresh_adapter_is_exact_noop_on_decoder(base_dir, batch):
    ids, mask = batch
    model = mltp.load_model(base_dir)
    with torch.no_grad():
        before = model(ids, mask)
    names = apply_lora(model, LoRAConfig())  # the paper's r=16, alpha=32, dropout 0.1
    assert len(names) == 7 * model.config.num_hidden_layers
    assert "layers.1.mlp.down_proj" in names
    assert not model.training and not model.layers[0].self_attn.q_proj.training  # eval kept
    with torch.no_grad():
        after = model(ids, mask)
    assert all(torch.equal(a, b) for a, b in zip(after, before))
    assert "layers.0.self_attn.q_proj.weight" in model.state_dict()
    assert "layers.0.self_attn.q_proj.lora_A" in model.state_dict()


# ------------------------------------------------------------------ the forward math

def test_forward_matches_plain_formula_in_float64():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 4).double(), r=3, alpha=5)
    assert layer.lora_A.dtype == torch.float64  # never narrower than the base
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    W, b, A, B = layer.weight, layer.bias, layer.lora_A, layer.lora_B
    expected = torch.empty(2, 5, 4, dtype=torch.float64)
    for i in range(2):
        for t in range(5):
            for o in range(4):
                low_rank = sum(B[o, k] * sum(A[k, j] * x[i, t, j] for j in range(6)) for k in range(3))
                expected[i, t, o] = sum(W[o, j] * x[i, t, j] for j in range(6)) + b[o] + low_rank * 5 / 3
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_bf16_autocast_follows_autocast_and_keeps_fp32_adapter():
    torch.manual_seed(0)
    toy = Toy()
    apply_lora(toy, LoRAConfig(r=4, alpha=8, dropout=0.0, targets=("q_proj", "up_proj")))
    randomize_adapter(toy)
    x = torch.randn(3, 6)
    ref = toy(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = toy(x)
        h = toy.q_proj(x)
    assert h.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits (eps 2**-8 ~ 3.9e-3): a few roundings through two layers
    # are ~1e-2 of the output's largest entry.
    assert_close_to_scale(y.float(), ref, 3e-2, "bf16 autocast")
    y.float().square().sum().backward()
    assert toy.q_proj.lora_A.dtype == torch.float32 and toy.q_proj.lora_B.grad.dtype == torch.float32
    assert toy.q_proj.lora_B.grad.abs().sum() > 0


def test_bf16_model_runs_lora_in_bf16():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 4).to(torch.bfloat16), r=2, alpha=4)
    assert layer.lora_A.dtype == torch.float32
    x = torch.randn(5, 8, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16


# ------------------------------------------------------------------ merge

def test_merged_equals_unmerged_and_merge_is_idempotent(base_dir, batch):
    ids, mask = batch
    model = mltp.load_model(base_dir)
    apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.1))
    randomize_adapter(model)
    q = model.layers[0].self_attn.q_proj
    w0 = q.weight.detach().double().clone()
    with torch.no_grad():
        unmerged = model(ids, mask)
    model.eval().train().eval()  # mode switches never merge
    assert not q.merged and torch.equal(q.weight.double(), w0)

    names = merge_lora(model)
    assert len(names) == 14 and q.merged
    # W' = W + (alpha/r) * B A, summed as rank-one outer products in float64.
    expected = w0 + 2.0 * sum(torch.outer(q.lora_B[:, k].double(), q.lora_A[k].double()) for k in range(4))
    # Stored in float32: the rank-4 update summed and added there, a few roundings of half an ulp.
    assert_close_to_scale(q.weight.double(), expected, 8 * FLOAT32_EPS, "merged q_proj")
    with torch.no_grad():
        merged = model(ids, mask)
    real_tokens_close(merged, unmerged, mask)
    for i, (a, b) in enumerate(zip(merged, unmerged)):  # pad rows too: same weights, same math
        assert_close_to_scale(a, b, 1e-5, f"hidden state {i}")

    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert merge_lora(model) == []  # second merge: nothing to do
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    with torch.no_grad():
        again = model(ids, mask)
    assert all(torch.equal(a, b) for a, b in zip(again, merged))


# ------------------------------------------------------------------ training touches only the adapter

def test_only_adapter_gets_gradients_and_adamw_leaves_base_bit_identical(base_dir, batch):
    ids, mask = batch
    model = mltp.load_model(base_dir)
    names = apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.1))
    params = lora_parameters(model)
    assert len(params) == 2 * len(names)
    adapter_ids = {id(p) for p in params}
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in adapter_ids}
    adapter_before = [p.detach().clone() for p in params]
    model.train()
    # Every parameter goes to the optimizer, weight decay on: only freezing can protect the base.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):  # step 1 moves B off zero, step 2 gives A a gradient too
        opt.zero_grad()
        h = model(ids, mask)[-1]
        (h[mask.bool()].square().mean()).backward()
        opt.step()
    for n, p in model.named_parameters():
        if id(p) in adapter_ids:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert not p.requires_grad and p.grad is None, n
            assert torch.equal(p, base_before[n]), f"base parameter {n} changed"
    assert all(not torch.equal(p, b) for p, b in zip(params, adapter_before))


# ------------------------------------------------------------------ save / load in PEFT's layout

def test_save_load_round_trip_and_peft_layout(base_dir, batch, tmp_path):
    ids, mask = batch
    model = mltp.load_model(base_dir)
    config = LoRAConfig(r=4, alpha=8, dropout=0.1)
    apply_lora(model, config)
    randomize_adapter(model, seed=5)
    with torch.no_grad():
        expected = model(ids, mask)
    save_adapter(model, tmp_path / "ad", config, base_model="tiny-llama")
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "FEATURE_EXTRACTION" and cfg["bias"] == "none"
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (4, 8, 0.1)
    assert sorted(cfg["target_modules"]) == sorted(SEVEN) and cfg["base_model_name_or_path"] == "tiny-llama"
    tensors = load_file(str(tmp_path / "ad" / "adapter_model.safetensors"))
    assert len(tensors) == 28
    assert tensors["base_model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (4, 32)
    assert tensors["base_model.model.layers.1.mlp.down_proj.lora_B.weight"].shape == (32, 4)
    # Same key set as the adapter peft itself wrote for the same architecture.
    peft_keys = set(load_file(str(base_dir.parent / "adapter" / "adapter_model.safetensors")))
    assert set(tensors) == peft_keys

    fresh = mltp.load_model(base_dir)
    loaded = load_adapter(fresh, tmp_path / "ad")
    assert (loaded.r, loaded.alpha, loaded.dropout, set(loaded.targets)) == (4, 8, 0.1, set(SEVEN))
    with torch.no_grad():
        got = fresh(ids, mask)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_save_overwrites_atomically_and_checks_config(base_dir, tmp_path):
    model = mltp.load_model(base_dir)
    config = LoRAConfig(r=4, alpha=8)
    apply_lora(model, config)
    save_adapter(model, tmp_path, config)
    save_adapter(model, tmp_path, config)  # overwrite in place, no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    with pytest.raises(ValueError, match="r=4.*r=8"):
        save_adapter(model, tmp_path / "x", LoRAConfig(r=8, alpha=8))
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(mltp.load_model(base_dir), tmp_path / "y", config)


@pytest.fixture
def saved(base_dir, tmp_path):
    model = mltp.load_model(base_dir)
    config = LoRAConfig(r=4, alpha=8)
    apply_lora(model, config)
    save_adapter(model, tmp_path, config)
    return tmp_path


def _rewrite(directory, edit):
    path = directory / "adapter_model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_load_missing_key_names_it(base_dir, saved):
    _rewrite(saved, lambda t: t.pop("base_model.model.layers.1.self_attn.v_proj.lora_B.weight"))
    with pytest.raises(ValueError, match=r"missing.*layers\.1\.self_attn\.v_proj\.lora_B\.weight"):
        load_adapter(mltp.load_model(base_dir), saved)


def test_load_wrong_shape_names_it(base_dir, saved):
    key = "base_model.model.layers.0.mlp.up_proj.lora_A.weight"
    _rewrite(saved, lambda t: t.__setitem__(key, torch.zeros(4, 31)))
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.up_proj\.lora_A\.weight.*\(4, 31\).*\(4, 32\)"):
        load_adapter(mltp.load_model(base_dir), saved)


def test_load_unexpected_key_names_it(base_dir, saved):
    key = "base_model.model.layers.0.mlp.extra_proj.lora_A.weight"
    _rewrite(saved, lambda t: t.__setitem__(key, torch.zeros(4, 32)))
    with pytest.raises(ValueError, match=r"unexpected.*extra_proj"):
        load_adapter(mltp.load_model(base_dir), saved)


def test_load_missing_files_and_unsupported_options(base_dir, saved, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(mltp.load_model(base_dir), empty)
    cfg_path = saved / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        load_adapter(mltp.load_model(base_dir), saved)
    cfg_path.write_text(json.dumps(cfg))
    (saved / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        load_adapter(mltp.load_model(base_dir), saved)


def test_load_refuses_mismatched_rank_or_merged_model(base_dir, saved):
    other = mltp.load_model(base_dir)
    apply_lora(other, LoRAConfig(r=2, alpha=8))
    with pytest.raises(ValueError, match="r=2"):
        load_adapter(other, saved)
    merged = mltp.load_model(base_dir)
    apply_lora(merged, LoRAConfig(r=4, alpha=8))
    merge_lora(merged)
    with pytest.raises(ValueError, match="already merged"):
        load_adapter(merged, saved)


def test_load_accepts_causal_lm_prefix(base_dir, saved):
    # peft on a ...ForCausalLM base writes base_model.model.model.layers...; the decoder is the inner model.
    _rewrite(saved, lambda t: t.update({k.replace("base_model.model.", "base_model.model.model."): t.pop(k)
                                        for k in list(t)}))
    load_adapter(mltp.load_model(base_dir), saved)


# ------------------------------------------------------------------ parity with peft

def test_peft_adapter_reproduces_peft_hidden_states(fixtures_dir):
    ref = load_file(str(fixtures_dir / "lora" / "hidden_states.safetensors"))
    ids, mask = ref["input_ids"], ref["attention_mask"]
    model = mltp.load_model(fixtures_dir / "lora" / "base")
    config = load_adapter(model, fixtures_dir / "lora" / "adapter")
    assert (config.r, config.alpha) == (4, 8)
    assert lora_layers(model)["layers.0.self_attn.q_proj"].lora_B.abs().sum() > 0
    with torch.no_grad():
        states = model(ids, mask)
    ref_states = [ref[f"hidden_state.{i}"] for i in range(len(states))]
    assert len(ref) == 2 + len(states)
    # Pad positions are compared nowhere: transformers and mltp fill them differently by design.
    real_tokens_close(states, ref_states, mask)
    # And the adapter matters: the base model alone is far from peft's output.
    with torch.no_grad():
        base_states = mltp.load_model(fixtures_dir / "lora" / "base")(ids, mask)
    assert (base_states[-1] - ref_states[-1])[mask.bool()].abs().max() > 1e-2


# ------------------------------------------------------------------ configuration errors

def test_bad_configs_and_targets_are_refused():
    with pytest.raises(ValueError, match="targets"):
        LoRAConfig(targets="q_proj")
    with pytest.raises(ValueError, match="r must"):
        LoRAConfig(r=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRAConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"no nn.Linear matches.*'head'"):
        apply_lora(Toy(), LoRAConfig(targets=("gate_proj",)))
    toy = Toy()
    apply_lora(toy, LoRAConfig(targets=("q_proj",)))
    with pytest.raises(ValueError, match="called twice"):
        apply_lora(toy, LoRAConfig(targets=("up_proj",)))
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(Toy())
    # PEFT's suffix rule: "proj" alone matches no module name exactly or after a dot.
    with pytest.raises(ValueError, match="no nn.Linear matches"):
        apply_lora(Toy(), LoRAConfig(targets=("proj",)))
