"""Poolers vs the plain float64 reference of scripts/fixtures/make_pooling_fixtures.py, plus the
properties the ablation relies on (padding invariance, W breaks layer-order symmetry)."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from closeness import assert_close_to_scale
from mltp.perceiver import CrossAttentionBlock
from mltp.pooling import (
    CONFIG_FILE,
    KINDS,
    WEIGHTS_FILE,
    PoolerConfig,
    build_pooler,
    count_parameters,
    load_pooler,
    save_pooler,
    settings_read,
)


@pytest.fixture(scope="module")
def cases(fixtures_dir):
    root = fixtures_dir / "pooling"
    configs = json.loads((root / "pooling_cases.json").read_text())
    tensors = load_file(str(root / "pooling_cases.safetensors"))
    hs = tensors["inputs/hidden_states"]  # (L+1, B, T, D) float64
    inputs = (tuple(hs.unbind(0)), tensors["inputs/attention_mask"])
    out = {}
    for name, config in configs.items():
        prefix = f"{name}/weights/"
        weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        out[name] = (config, weights, tensors[f"{name}/expected"])
    return inputs, out


def built(config, weights, dtype=torch.float64):
    pooler = build_pooler(PoolerConfig(**config)).to(dtype)  # cast first: loading copies into this dtype
    pooler.load_state_dict(weights, strict=True)  # the reference's names are the module's names
    return pooler


def cast(inputs, dtype):
    hs, mask = inputs
    return tuple(h.to(dtype) for h in hs), mask


def test_every_kind_has_a_reference_case(cases):
    _, all_cases = cases
    assert {config["kind"] for config, _, _ in all_cases.values()} == set(KINDS)


# Relative to each case's largest output entry (tests/closeness.py): ~80 ulps of float32 for the
# same sums in another order; float64 is held far tighter than float32 could be.
@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_plain_reference(cases, dtype, rel):
    inputs, all_cases = cases
    for name, (config, weights, expected) in all_cases.items():
        with torch.no_grad():
            got = built(config, weights, dtype)(*cast(inputs, dtype))
        assert got.dtype == dtype, name
        assert_close_to_scale(got.double(), expected, rel, name)


def left_padded(inputs, extra=2):
    # Move each row's real tokens to the end, add `extra` more pad columns, fill pads with garbage.
    hs, mask = inputs
    B, T = mask.shape
    gen = torch.Generator().manual_seed(0)
    new_hs = [1e3 * torch.randn(B, T + extra, h.shape[-1], generator=gen, dtype=h.dtype) for h in hs]
    new_mask = torch.zeros(B, T + extra, dtype=mask.dtype)
    for b in range(B):
        n = int(mask[b].sum())
        new_mask[b, -n:] = 1
        for h, new in zip(hs, new_hs):
            new[b, -n:] = h[b, :n]
    return tuple(new_hs), new_mask


def right_padded_wider(inputs, extra=3):
    hs, mask = inputs
    B, T = mask.shape
    pad = lambda h: torch.cat([h, -7e2 * torch.ones(B, extra, h.shape[-1], dtype=h.dtype)], dim=1)
    return tuple(pad(h) for h in hs), torch.cat([mask, torch.zeros(B, extra, dtype=mask.dtype)], dim=1)


def test_padding_invariance(cases):
    inputs, all_cases = cases
    for name, (config, weights, _) in all_cases.items():
        pooler = built(config, weights)
        with torch.no_grad():
            right = pooler(*inputs)
            torch.testing.assert_close(pooler(*left_padded(inputs)), right, atol=1e-10, rtol=0, msg=name)
            torch.testing.assert_close(pooler(*right_padded_wider(inputs)), right, atol=1e-10, rtol=0, msg=name)
            torch.testing.assert_close(pooler(*nan_in_pads(inputs)), right, atol=1e-10, rtol=0, msg=name)


def nan_in_pads(inputs):
    # The decoder's pad outputs are meaningless; even NaN there must not reach an embedding.
    hs, mask = inputs
    return tuple(torch.where(mask[..., None] != 0, h, float("nan")) for h in hs), mask


def permute_blocks(inputs, order):
    hs, mask = inputs
    hs = list(hs)
    originals = [hs[i] for i in range(1, len(hs))]
    for slot, source in enumerate(order, start=1):
        hs[slot] = originals[source - 1]
    return tuple(hs), mask


@pytest.mark.parametrize("token", ["eos", "mean"])
def test_without_w_the_layer_order_does_not_matter(cases, token):
    inputs, all_cases = cases
    config, weights, _ = all_cases["mltp_eos_w"]
    config = dict(config, layer_token=token)
    with_w = built(config, weights)
    no_w = built(dict(config, layer_weights=False), {k: v for k, v in weights.items() if k != "layer_weights"})
    shuffled = permute_blocks(inputs, [3, 1, 4, 2])
    with torch.no_grad():
        torch.testing.assert_close(no_w(*shuffled), no_w(*inputs), atol=1e-10, rtol=0)
        gap = (with_w(*shuffled) - with_w(*inputs)).abs().max()
    assert gap > 1e-3  # W tells the layers apart


def test_layer_mean_is_order_free_and_mltp_subset_reads_only_its_blocks(cases):
    inputs, all_cases = cases
    config, weights, _ = all_cases["mltp_subset_mean_w"]  # layers 1,3
    pooler = built(config, weights)
    assert pooler.needs_layers == (1, 3)
    hs, mask = inputs
    sparse = tuple(h if i in (1, 3) else None for i, h in enumerate(hs))[:4]  # the model may drop the rest
    with torch.no_grad():
        torch.testing.assert_close(pooler(sparse, mask), pooler(*inputs), atol=0, rtol=0)


def test_needs_layers():
    L = 30
    for kind in ("eos", "mean", "trainable"):
        assert build_pooler(PoolerConfig(kind=kind, hidden_size=64, num_layers=L)).needs_layers == (L,)
    mltp = build_pooler(PoolerConfig(kind="mltp", hidden_size=64, num_layers=L, layers="middle4", layer_token="eos"))
    assert mltp.needs_layers == (14, 15, 16, 17)
    assert mltp.layer_weights.shape == (4, 64)  # W has one row per selected block


def test_output_is_unit_norm_and_gradients_flow(cases):
    inputs, all_cases = cases
    for name in ("mltp_eos_w", "mltp_mean_w", "trainable_all", "scalar_mix_eos"):
        config, weights, _ = all_cases[name]
        pooler = built(config, weights)
        hs = tuple(h.clone().requires_grad_(True) for h in inputs[0])
        out = pooler(hs, inputs[1])
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(out.shape[0], dtype=out.dtype))
        (out * torch.randn_like(out)).sum().backward()
        for pname, p in pooler.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (name, pname)
        read = pooler.needs_layers
        assert all(hs[i].grad is not None and hs[i].grad.abs().sum() > 0 for i in read), name
        assert all(hs[i].grad is None for i in range(len(hs)) if i not in read), name
        if config["kind"] == "mltp":
            assert pooler.layer_weights.grad.abs().sum() > 0


def test_bf16_autocast_on_cpu(cases):
    inputs, all_cases = cases
    for name in ("mltp_mean_w", "trainable_all", "scalar_mix_mean_subset"):
        config, weights, expected = all_cases[name]
        pooler = built(config, weights, torch.float32)
        hs = tuple(h.to(torch.bfloat16) for h in inputs[0])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = pooler(hs, inputs[1])
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), name
        assert (out.double() - expected).abs().max() < 0.1, name


def test_save_load_round_trip(cases, tmp_path):
    inputs, all_cases = cases
    for name, (config, weights, _) in all_cases.items():
        pooler = built(config, weights, torch.float32)
        save_pooler(pooler, tmp_path / name)
        loaded = load_pooler(tmp_path / name)
        assert loaded.config == pooler.config and type(loaded) is type(pooler)
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
        with torch.no_grad():
            x = cast(inputs, torch.float32)
            torch.testing.assert_close(loaded(*x), pooler(*x), atol=0, rtol=0, msg=name)


def test_load_errors(cases, tmp_path):
    _, all_cases = cases
    config, weights, _ = all_cases["mltp_eos_w"]
    save_pooler(built(config, weights, torch.float32), tmp_path)
    good = load_file(str(tmp_path / WEIGHTS_FILE))

    save_file({k: v for k, v in good.items() if k != "layer_weights"}, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="missing tensors \\['layer_weights'\\]"):
        load_pooler(tmp_path)
    save_file(dict(good, extra=torch.zeros(1)), str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="unexpected tensors \\['extra'\\]"):
        load_pooler(tmp_path)
    save_file(dict(good, latents=torch.zeros(5, 16)), str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="'latents' has shape \\(5, 16\\), expected \\(3, 16\\)"):
        load_pooler(tmp_path)

    raw = json.loads((tmp_path / CONFIG_FILE).read_text())
    save_file(good, str(tmp_path / WEIGHTS_FILE))
    # Saved while a latent-attention kind existed (results/*/final/): its one field shaped nothing else.
    (tmp_path / CONFIG_FILE).write_text(json.dumps(dict(raw, dictionary_size=512)))
    assert load_pooler(tmp_path).config == PoolerConfig(**raw)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(dict(raw, colour="red")))
    with pytest.raises(ValueError, match="unknown pooler config keys \\['colour'\\]"):
        load_pooler(tmp_path)
    (tmp_path / CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_pooler(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(raw))
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_pooler(tmp_path)


def test_bad_inputs(cases):
    inputs, all_cases = cases
    config, weights, _ = all_cases["mltp_eos_w"]
    pooler = built(config, weights)
    hs, mask = inputs
    empty = mask.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match="rows \\[1\\] have no real token"):
        pooler(hs, empty)
    with pytest.raises(ValueError, match="hidden_states has 3 entries"):
        pooler(hs[:3], mask)
    with pytest.raises(ValueError, match="hidden_states\\[2\\] has shape"):
        pooler(hs[:2] + (hs[2][:, :-1],) + hs[3:], mask)
    with pytest.raises(ValueError, match="attention_mask must be \\(B, T\\)"):
        pooler(hs, mask[0])


def test_config_errors():
    with pytest.raises(ValueError, match="unknown kind"):
        PoolerConfig(kind="cls", hidden_size=64, num_layers=4)
    with pytest.raises(ValueError, match="layer_token"):
        PoolerConfig(kind="mltp", hidden_size=64, num_layers=4)  # the caller must choose eos/mean
    with pytest.raises(ValueError, match="tokens"):
        PoolerConfig(kind="trainable", hidden_size=64, num_layers=4, tokens="cls")
    with pytest.raises(ValueError, match="'last9'.*L=4"):
        PoolerConfig(kind="mltp", hidden_size=64, num_layers=4, layers="last9", layer_token="eos")
    with pytest.raises(ValueError, match="multiple of head_dim"):
        PoolerConfig(kind="trainable", hidden_size=100, num_layers=4)
    with pytest.raises(ValueError, match="hidden_size"):
        PoolerConfig(kind="eos", hidden_size=0, num_layers=4)


def test_default_widths_and_parameter_count():
    small = PoolerConfig(kind="mltp", hidden_size=576, num_layers=30, layer_token="eos")
    assert (small.num_heads, small.head_dim, small.num_latents, small.ff_mult) == (9, 64, 128, 4)

    def by_hand(D, L_sel, R, inner, mult, with_w):
        # latents + W + 3 LayerNorms + q/kv/out (no bias) + GEGLU feed-forward (with bias)
        return (R * D + (L_sel * D if with_w else 0) + 3 * 2 * D + D * inner * 4
                + (D * 2 * mult * D + 2 * mult * D) + (mult * D * D + D))

    official = PoolerConfig(kind="mltp", hidden_size=4096, num_layers=32, layer_token="eos",
                            num_latents=768, num_heads=32, head_dim=2048)
    assert count_parameters(official) == by_hand(4096, 32, 768, 65536, 4, True)
    assert 1.27e9 < count_parameters(official) < 1.29e9  # the official widths: ~1.28B at d = 4096
    assert count_parameters(small) == by_hand(576, 30, 128, 576, 4, True)
    assert count_parameters(PoolerConfig(kind="layer-mean", hidden_size=576, num_layers=30, layer_token="eos")) == 0


def test_cross_attention_records_the_attention_it_applies():
    # The recorded shares are the softmax the block applies, averaged over heads and latents:
    # recomputed here from the block's own weights, written out with einsum.
    torch.manual_seed(0)
    block = CrossAttentionBlock(dim=16, num_heads=2, head_dim=4, ff_mult=2).double()
    queries, context = torch.randn(3, 5, 16, dtype=torch.float64), torch.randn(3, 7, 16, dtype=torch.float64)
    block.record = []
    block(queries, context)
    (shares,) = block.record
    lq = torch.nn.functional.layer_norm(queries, (16,), block.norm_query.weight, block.norm_query.bias, block.norm_query.eps)
    lc = torch.nn.functional.layer_norm(context, (16,), block.norm_context.weight, block.norm_context.bias, block.norm_context.eps)
    q = (lq @ block.to_q.weight.T).view(3, 5, 2, 4)  # (B, Q, H, E)
    k = (lc @ block.to_kv.weight[:8].T).view(3, 7, 2, 4)  # (B, K, H, E): k is the first half of to_kv
    probs = torch.einsum("bqhe,bkhe->bhqk", q, k).div(2.0).softmax(-1)  # / sqrt(E = 4)
    torch.testing.assert_close(shares, probs.mean(dim=(1, 2)))
    assert shares.shape == (3, 7)
    block.record = None
    block(queries, context)  # recording off: nothing kept


def test_each_kind_declares_the_settings_it_reads():
    # Declared beside the registry, and true: a setting a kind does not declare leaves its pooler
    # unchanged (same parameters, same output from the same seed); one it declares changes it.
    other = {"block": 2, "tokens": "all", "layers": "last2", "layer_token": "mean", "layer_weights": False,
             "layer_weight_std": 3.0, "num_latents": 3, "num_heads": 4, "head_dim": 2}
    base = dict(hidden_size=8, num_layers=4, layer_token="eos", num_latents=2, num_heads=2)
    g = torch.Generator().manual_seed(1)
    hidden = tuple(torch.randn(2, 5, 8, generator=g) for _ in range(5))  # L+1 states of (B, T, D)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])

    def pooled(kind, **change):
        torch.manual_seed(0)
        pooler = build_pooler(PoolerConfig(kind=kind, **{**base, **change})).eval()
        with torch.no_grad():
            return sum(p.numel() for p in pooler.parameters()), pooler(hidden, mask)

    for kind, declared in KINDS.items():
        allowed = {k: v for k, v in other.items() if k != "block" or k in declared.reads}  # others refuse a block
        for setting, value in allowed.items():
            # Beside the other settings at their base and at their other values: one setting can
            # matter only beside another (heads split attention over many tokens, never over one).
            rest = {k: v for k, v in allowed.items() if k != setting}
            same = True
            for context in ({}, rest):
                a, b = pooled(kind, **context), pooled(kind, **context, **{setting: value})
                same = same and a[0] == b[0] and torch.equal(a[1], b[1])
            assert same == (setting not in declared.reads), (kind, setting)
    mltp = PoolerConfig(kind="mltp", hidden_size=8, num_layers=4, layer_token="eos", layer_weights=False, num_heads=2)
    assert "layer_weight_std" not in settings_read(mltp) and "layers" in settings_read(mltp)
