"""The decoder against Hugging Face transformers (fixtures from scripts/fixtures/make_hf_fixtures.py).

Every parity test runs both forwards: the textbook one (`Decoder.forward`, padded) and the packed
one (`mltp.packed.forward`, the real tokens only).
"""
import functools

import pytest
import torch
import torch._inductor.config as inductor_config
from safetensors.torch import load_file

import mltp
from closeness import assert_close_to_scale
from mltp import packed
from mltp.lora import LoRAConfig, apply_lora, lora_parameters
from mltp.model import additive_mask, attention_mask_4d, compile_blocks, reference_attention

ARCHS = ["llama", "mistral", "qwen2"]
# name -> forward(model, ids, mask, **kwargs) -> states
FORWARDS = {
    "plain": lambda model, *args, **kw: model(*args, **kw),
    "packed": packed.forward,
}


def expected(fixtures_dir, arch):
    return load_file(fixtures_dir / "hf" / arch / "expected.safetensors")


def assert_states_close(ours, ref, mask, rel=1e-5):
    # Compare at real tokens only: pad positions carry no meaning (every pooler masks them). Each
    # state to `rel` of its largest entry (tests/closeness.py): 1e-5 is ~80 float32 ulps, room for
    # another implementation's order of the same sums through a few blocks; a wrong mask, RoPE or
    # norm moves states by percents.
    assert len(ours) == ref.shape[0]
    real = mask.bool()
    for i, h in enumerate(ours):
        assert_close_to_scale(h[real], ref[i][real], rel, f"hidden state {i}")


@pytest.mark.parametrize("path", FORWARDS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_causal_hidden_states_match_transformers(fixtures_dir, arch, side, path):
    ref = expected(fixtures_dir, arch)
    model = mltp.load_model(fixtures_dir / "hf" / arch)
    ids, mask = ref[f"{side}.input_ids"], ref[f"{side}.attention_mask"]
    with torch.no_grad():
        states = FORWARDS[path](model, ids, mask, causal=True)
    assert_states_close(states, ref[f"{side}.causal"], mask)


@pytest.mark.parametrize("path", FORWARDS)
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_bidirectional_hidden_states_match_transformers_with_full_mask(fixtures_dir, arch, side, path):
    ref = expected(fixtures_dir, arch)
    model = mltp.load_model(fixtures_dir / "hf" / arch)
    ids, mask = ref[f"{side}.input_ids"], ref[f"{side}.attention_mask"]
    with torch.no_grad():
        states = FORWARDS[path](model, ids, mask, causal=False)
    assert_states_close(states, ref[f"{side}.bidirectional"], mask)


def test_plain_and_packed_forwards_agree_under_autocast(fixtures_dir):
    # bf16 autocast: both build their mask bias in the autocast dtype; both forwards
    # must still give the same states (within bf16 rounding) at the real tokens.
    ref = expected(fixtures_dir, "qwen2")
    model = mltp.load_model(fixtures_dir / "hf" / "qwen2")
    ids, mask = ref["left.input_ids"], ref["left.attention_mask"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(ids, mask)
        tuned = packed.forward(model, ids, mask)
    real = mask.bool()
    for i, (a, b) in enumerate(zip(plain, tuned)):
        scale = a[real].float().abs().max()
        assert (a[real].float() - b[real].float()).abs().max() <= 0.05 * scale, f"hidden state {i}"


def test_padding_side_does_not_change_real_tokens(fixtures_dir):
    model = mltp.load_model(fixtures_dir / "hf" / "qwen2")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        alone = model(ids)[-1][0]
        left = model(torch.tensor([[0, 0, 5, 6, 7, 8]]), torch.tensor([[0, 0, 1, 1, 1, 1]]))[-1][0, 2:]
        right = model(torch.tensor([[5, 6, 7, 8, 0]]), torch.tensor([[1, 1, 1, 1, 0]]))[-1][0, :4]
    assert_close_to_scale(left, alone, 1e-5, "left padded")  # ~80 float32 ulps of the largest entry
    assert_close_to_scale(right, alone, 1e-5, "right padded")


def test_untied_lm_head_logits_match_transformers(fixtures_dir):
    ref = expected(fixtures_dir, "llama")
    model = mltp.load_model(fixtures_dir / "hf" / "llama", lm_head=True)
    ids, mask = ref["left.input_ids"], ref["left.attention_mask"]
    with torch.no_grad():
        logits = model.logits(model(ids, mask)[-1])
    real = mask.bool()
    # Each logit sums 32 products of hidden entries (up to ~2.4) and head weights: its rounding is
    # that of those terms, ~1e-5 of the hidden scale, which is ~1e-4 of the largest logit (~0.3).
    assert_close_to_scale(logits[real], ref["left.logits"][real], 2e-4, "logits")


def test_lm_head_is_skipped_unless_asked(fixtures_dir):
    model = mltp.load_model(fixtures_dir / "hf" / "llama")
    assert model.lm_head is None
    with pytest.raises(ValueError, match="without its LM head"):
        model.logits(torch.zeros(1, 1, 32))


@pytest.mark.parametrize("path", FORWARDS)
def test_upto_returns_the_first_blocks_unchanged(fixtures_dir, path):
    model = mltp.load_model(fixtures_dir / "hf" / "llama")
    ids = torch.randint(0, 97, (2, 6))
    with torch.no_grad():
        full = FORWARDS[path](model, ids)
        part = FORWARDS[path](model, ids, upto=2)
    assert len(part) == 3
    for a, b in zip(part, full[:3]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("path", FORWARDS)
def test_keep_returns_only_the_named_states_unchanged(fixtures_dir, path):
    # The states a pooler does not read come back as None; the kept ones, the final norm on the
    # last included, are those of the full forward.
    model = mltp.load_model(fixtures_dir / "hf" / "qwen2")
    forward = functools.partial(FORWARDS[path], model)
    L = model.config.num_hidden_layers
    ids = torch.randint(1, 97, (2, 7))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    with torch.no_grad():
        full = forward(ids, mask)
        some = forward(ids, mask, keep=(1, L))
        middle = forward(ids, mask, upto=2, keep=[0, 2])
    assert [i for i, h in enumerate(some) if h is not None] == [1, L]
    assert torch.equal(some[1], full[1]) and torch.equal(some[L], full[L])
    assert len(middle) == 3 and middle[1] is None
    assert torch.equal(middle[0], full[0]) and torch.equal(middle[2], full[2])
    with pytest.raises(ValueError, match=r"keep=\[3\] outside the 3 states 0..2"):
        forward(ids, mask, upto=2, keep=[3])
    with pytest.raises(ValueError, match=rf"upto=9 outside 0..{L}"):
        forward(ids, mask, upto=9)


def test_encoding_in_place_equals_the_autograd_forward(fixtures_dir):
    # Without autograd the MLP works in place (one buffer fewer at the memory peak); with it, it
    # must not. Same values either way, and the autograd one still backpropagates.
    ref = expected(fixtures_dir, "qwen2")
    model = mltp.load_model(fixtures_dir / "hf" / "qwen2")
    ids, mask = ref["left.input_ids"], ref["left.attention_mask"]
    with torch.no_grad():
        encoded = packed.forward(model, ids, mask)
    traced = packed.forward(model, ids, mask)
    assert traced[-1].requires_grad
    for a, b in zip(encoded, traced):
        assert torch.equal(a, b.detach())
    traced[-1].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_skipping_padding_is_the_padded_forward_with_zeros_at_pads(fixtures_dir):
    # Mistral's fixture has a 5-token sliding window, so the real-tokens-only layout meets the
    # window mask too. Forward and LoRA gradients agree; the pad positions become exact zeros.
    model = mltp.load_model(fixtures_dir / "hf" / "mistral")
    apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)
    for p in lora_parameters(model):
        p.data.normal_(0, 0.1)  # B starts at zero; make the adapter matter
    ids = torch.randint(1, 97, (3, 9))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1], [1] * 9, [0, 0, 0, 0, 0, 0, 0, 1, 1]])
    runs = {}
    for skip in (False, True):
        model.zero_grad()
        states = packed.forward(model, ids, mask) if skip else model(ids, mask)
        sum(h[mask.bool()].square().sum() for h in states).backward()
        runs[skip] = [h.detach() for h in states], [p.grad.clone() for p in lora_parameters(model)]
    (padded, g_padded), (skipped, g_skipped) = runs[False], runs[True]
    assert_states_close(skipped, torch.stack(padded), mask)
    for h in skipped:
        assert torch.equal(h[~mask.bool()], torch.zeros_like(h[~mask.bool()]))
    scale = max(g.abs().max().item() for g in g_padded)  # gradients: as test_gradcache.assert_same
    for a, b in zip(g_skipped, g_padded):
        torch.testing.assert_close(a, b, atol=1e-3 * scale, rtol=0)


def test_padding_is_skipped_on_the_cpu_only_and_not_by_compiled_blocks(fixtures_dir):
    model = mltp.load_model(fixtures_dir / "hf" / "llama")
    assert packed.packs_padding(model, torch.device("cpu")) and not packed.packs_padding(model, torch.device("cuda"))
    model.train()
    assert packed.packs_padding(model, torch.device("cpu"))  # in training too
    compile_blocks(model)  # the packed forward would bypass the compiled blocks: it is not used
    assert not packed.packs_padding(model, torch.device("cpu"))


@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_path_equals_written_out_attention(causal):
    torch.manual_seed(0)
    B, H, K, T, Dh = 2, 4, 2, 6, 8
    q, k, v = torch.randn(B, H, T, Dh), torch.randn(B, K, T, Dh), torch.randn(B, K, T, Dh)
    key_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    mask = attention_mask_4d(key_mask, T, causal, None, "cpu")
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    # Attention outputs are convex mixes of standard-normal values: magnitude ~1 to ~3, so 1e-5 of
    # the largest is ~80 float32 ulps of another order of the same softmax and sums.
    assert_close_to_scale(sdpa, reference_attention(q, k, v, mask), 1e-5, "sdpa")
    # The decoder hands SDPA an additive bias (0 / -inf) instead, rows strided to 16 elements.
    bias = additive_mask(mask, q.dtype)
    assert bias.shape == mask.shape and bias.stride(-2) == 16 and torch.equal(bias == 0, mask)
    assert bool(torch.isneginf(bias[~mask.expand_as(bias)]).all())
    with_bias = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    assert_close_to_scale(with_bias, sdpa, 1e-5, "additive bias")


def test_bidirectional_sliding_window_is_refused(fixtures_dir):
    model = mltp.load_model(fixtures_dir / "hf" / "mistral")  # sliding_window = 5
    with pytest.raises(ValueError, match="sliding window"):
        model(torch.randint(0, 97, (1, 9)), causal=False)


def test_compiled_matches_eager(fixtures_dir):
    model = mltp.load_model(fixtures_dir / "hf" / "qwen2")
    ref = expected(fixtures_dir, "qwen2")
    ids, mask = ref["left.input_ids"], ref["left.attention_mask"]
    compiled = torch.compile(model)
    with torch.no_grad():
        eager, comp = model(ids, mask), compiled(ids, mask)
    for i, (a, b) in enumerate(zip(eager, comp)):
        assert_close_to_scale(b, a, 1e-5, f"hidden state {i}")  # inductor fuses: another order


def test_compile_modes_reach_torch_compile(fixtures_dir, monkeypatch):
    # run.py / bench.py --compile reduce-overhead: the mode is torch.compile's (CUDA graphs on a
    # GPU; on the CPU inductor alone), and the compiled blocks still compute the same states.
    options, real_compile = [], torch.compile

    def recording_compile(*args, **kwargs):
        options.append(kwargs.get("options"))
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = mltp.load_model(fixtures_dir / "hf" / "qwen2")
    ref = expected(fixtures_dir, "qwen2")
    ids, mask = ref["left.input_ids"], ref["left.attention_mask"]
    with torch.no_grad():
        eager = model(ids, mask)
        compile_blocks(model, "reduce-overhead")
        compiled = model(ids, mask)
    # the mode's own options (torch.compile takes options or a mode, not both), eager's RNG added
    assert options == [{"triton.cudagraphs": True, "fallback_random": True}] * len(model.layers)
    assert inductor_config.fallback_random is False  # scoped to the blocks, not set process-wide
    for i, (a, b) in enumerate(zip(eager, compiled)):
        assert_close_to_scale(b, a, 1e-5, f"hidden state {i}")
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        compile_blocks(model, "fast")


def lora_gradients(fixtures_dir, arch, prepare, forward=FORWARDS["plain"]):
    """LoRA gradients of one backward through a model with dropout on; `prepare(model)` varies the run."""
    model = mltp.load_model(fixtures_dir / "hf" / arch)
    torch.manual_seed(1)
    apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.1))
    with torch.no_grad():  # B != 0, so the gradient reaches A and the dropout mask matters
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(std=0.05)
    model.train()
    prepare(model)
    ref = expected(fixtures_dir, arch)
    torch.manual_seed(7)
    h = forward(model, ref["left.input_ids"], ref["left.attention_mask"])[-1]
    h.pow(2).mean().backward()
    return torch.cat([p.grad.flatten() for p in lora_parameters(model)])


def test_compiled_training_matches_eager_with_lora_dropout(fixtures_dir):
    # One backward through LoRA with dropout on: compile_blocks must draw the same dropout masks.
    eager = lora_gradients(fixtures_dir, "qwen2", lambda model: None)
    compiled = lora_gradients(fixtures_dir, "qwen2", compile_blocks)
    scale = eager.abs().max()
    assert scale > 0
    assert (eager - compiled).abs().max() < 1e-4 * scale


def test_gradient_checkpointing_gives_the_same_gradients(fixtures_dir):
    # Recomputing each block in backward (the 7B setting) must replay its LoRA dropout masks exactly.
    def checkpointed(model):
        model.gradient_checkpointing = True

    for forward in FORWARDS.values():
        plain = lora_gradients(fixtures_dir, "llama", lambda model: None, forward)
        assert plain.abs().max() > 0
        assert_close_to_scale(lora_gradients(fixtures_dir, "llama", checkpointed, forward), plain, 1e-5, "checkpointed")


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_skipping_padding_in_training_keeps_the_dropout_masks(fixtures_dir, checkpointing, monkeypatch):
    # The packed layout draws each LoRA dropout mask for the padded (B*T, I) grid: from one seed,
    # the padded forward's gradients, through gradient checkpointing's replay too.
    def prepare(model):
        model.gradient_checkpointing = checkpointing

    def grads(skip):
        def real_tokens(model, ids, mask):  # the loss must not read the pads, which differ
            return [h * mask[..., None] for h in (packed.forward(model, ids, mask) if skip else model(ids, mask))]
        return lora_gradients(fixtures_dir, "llama", prepare, real_tokens)

    padded = grads(False)
    assert expected(fixtures_dir, "llama")["left.attention_mask"].eq(0).any()  # there is padding to skip
    # Other matmul shapes: float32 rounding of the largest entry, here well under the teeth below.
    assert_close_to_scale(grads(True), padded, 1e-4, "packed")
    # A mask drawn for the packed (n, I) tokens alone is other noise: the gradients tell it apart.
    monkeypatch.setattr(packed.Packing, "linear", lambda self, layer, x: layer(x))
    assert (grads(True) - padded).abs().max() > 1e-3 * padded.abs().max()

