"""The training step (mltp.step) against the step written out, and GradCache (mltp.gradcache): the
whole batch's loss and gradients, a mini-batch at a time."""
import dataclasses
import importlib.util
from functools import partial
from pathlib import Path

import pytest
import torch

from mltp.gradcache import cached_backward, gradcache_step, plain_backward
from mltp.loss import info_nce
from mltp.step import contrastive_step, embed
from mltp.train import TrainConfig, batch_texts
from test_train import make_embedder, make_rows

ROOT = Path(__file__).resolve().parents[1]


def hard_batch(n=8):
    # Hard negatives on all rows but one; row 6's positive is row 1's (a false negative for both),
    # and row 4's hard negative is row 0's positive: masking must act in both places.
    rows = make_rows(n)
    rows[3] = dataclasses.replace(rows[3], negative=None)
    rows[6] = dataclasses.replace(rows[6], positive=rows[1].positive)
    rows[4] = dataclasses.replace(rows[4], negative=rows[0].positive)
    rows[5] = dataclasses.replace(rows[5], positive="a much longer positive text " * 2)  # lengths differ
    return rows


def trained_looking(emb):
    with torch.no_grad():
        for name, p in emb.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # so that LoRA contributes to the gradients
    emb.train()
    return emb


def step(emb, rows, cfg, seed=0):
    # As the trainer picks it (mltp.train): GradCache when the batch is cut into mini-batches.
    emb.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, n_tokens = (gradcache_step if cfg.mini_batch else contrastive_step)(emb, batch_texts(emb, rows), cfg)
    return loss.item(), n_tokens, {n: p.grad.clone() for n, p in emb.named_parameters() if p.grad is not None}


def written_out_step(emb, rows, cfg):
    """The step as the paper states it, from the public pieces: embed the queries, positives and
    negatives (three padded forwards, or one of all three), InfoNCE with false negatives masked by
    text key, backward. Returns (loss, real tokens embedded, gradients)."""
    texts = batch_texts(emb, rows)
    groups = [emb.tokenizer.encode_ids(g, cfg.max_length) for g in (texts.queries, texts.positives, texts.negatives)]
    forwards = [groups[0] + groups[1] + groups[2]] if cfg.joint_forward else groups
    q, p, n = torch.cat([emb(*emb.batch(rows)) for rows in forwards]).split([len(g) for g in groups])
    loss = info_nce(q, p, n, scale=cfg.scale, pos_keys=torch.tensor(texts.pos_keys),
                    cand_keys=torch.tensor(texts.pos_keys + texts.neg_keys))
    (loss / cfg.grad_accum).backward()
    n_tokens = sum(len(r) for g in groups for r in g)
    return loss.item(), n_tokens, {n: p.grad.clone() for n, p in emb.named_parameters() if p.grad is not None}


def assert_same(a, b, exact=False):
    """Same tokens; the loss to 1e-5 of itself (~80 float32 ulps) and each gradient entry to 1e-3 of
    the largest entry (tests/closeness.py): mini-batches sum the same ~1,600 token terms in another
    order and other matmul shapes, and a block's gradient sums terms that cancel to far less than
    their own size. A wrong mini-batch or a lost mask moves both by percents. `exact`: bit for bit."""
    (la, ta, ga), (lb, tb, gb) = a, b
    assert ta == tb and (la == lb if exact else la == pytest.approx(lb, rel=1e-5)), (la, lb)
    assert ga.keys() == gb.keys() and any("lora_A" in n for n in ga) and any(n.startswith("pooler.") for n in ga)
    atol = 0.0 if exact else 1e-3 * max(g.abs().max().item() for g in gb.values())
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=0, atol=atol, msg=n)


def test_mini_batches_give_the_whole_batch_loss_and_gradients(fixtures_dir):
    # Dropout off: the mini-batches' forwards then compute what the whole groups' forwards do.
    torch.manual_seed(0)
    emb = trained_looking(make_embedder(fixtures_dir, dropout=0.0)[0])
    rows = hard_batch()
    for joint in (False, True):
        whole = step(emb, rows, TrainConfig(max_length=96, joint_forward=joint))
        for mini in (1, 3):
            assert_same(whole, step(emb, rows, TrainConfig(max_length=96, joint_forward=joint, mini_batch=mini)))


def test_the_comparison_allows_float32_rounding_and_nothing_more():
    # Another x86-64 CPU summed in another order: the loss of 2.68 off by 1.43e-6, a gradient entry
    # off by a few ulps of the largest one. That is rounding and must pass; a percent must not.
    grads = {"model.lora_A": torch.tensor([0.5, -2e-4]), "pooler.w": torch.tensor([1e-3, 0.25])}
    whole = (2.68, 100, grads)
    rounded = (2.68 + 1.43e-6, 100, {n: g + 4 * 2.0 ** -23 * torch.sign(g) for n, g in grads.items()})
    assert_same(whole, rounded)
    with pytest.raises(AssertionError):
        assert_same(whole, (2.68 * 1.01, 100, grads))
    with pytest.raises(AssertionError):
        assert_same(whole, (2.68, 100, {**grads, "pooler.w": grads["pooler.w"] * 1.01}))


def test_the_step_is_the_step_written_out(fixtures_dir):
    # Dropout on: the same forwards in the same order draw the same masks, bit for bit, so a run
    # trains as the paper's step says, and as runs made before this code did.
    torch.manual_seed(0)
    emb = trained_looking(make_embedder(fixtures_dir, dropout=0.1)[0])
    rows = hard_batch()
    for joint in (False, True):
        cfg = TrainConfig(max_length=96, joint_forward=joint, grad_accum=3)
        emb.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        assert_same(written_out_step(emb, rows, cfg), step(emb, rows, cfg), exact=True)


def test_dropout_masks_are_replayed_on_the_second_pass(fixtures_dir):
    # Dropout on: the reference keeps every mini-batch's graph and back-propagates once. GradCache
    # must give its gradients, which it can only if the second pass draws the first pass's masks.
    torch.manual_seed(0)
    emb = trained_looking(make_embedder(fixtures_dir, dropout=0.5)[0])
    texts = batch_texts(emb, hard_batch())
    rows = emb.tokenizer.encode_ids(texts.queries + texts.positives, 96)
    chunks = [partial(embed, emb, rows[i:i + 4]) for i in range(0, len(rows), 4)]

    def loss_fn(outputs):
        q, p = torch.cat(outputs).split(8)  # (16, D) -> (8, D), (8, D)
        return (q * p).sum(-1).pow(2).mean()

    results = []
    for backward in (plain_backward, lambda c, f: cached_backward(c, f, torch.device("cpu"))):
        emb.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        loss = backward(chunks, loss_fn).item()
        after = torch.rand(1).item()  # the generator ends where one pass would leave it
        results.append((loss, after, {n: p.grad.clone() for n, p in emb.named_parameters() if p.grad is not None}))
    (l_plain, r_plain, g_plain), (l_cached, r_cached, g_cached) = results
    assert l_plain == l_cached and r_plain == r_cached
    # The cached pass sums each parameter's gradient over the mini-batches through the cached
    # embeddings' gradients: float32 rounding relative to the largest entry (assert_same).
    scale = max(g.abs().max().item() for g in g_plain.values())
    for n in g_plain:
        torch.testing.assert_close(g_plain[n], g_cached[n], rtol=0, atol=1e-3 * scale, msg=n)
    # The check has teeth: other masks (another seed for the plain pass) move the gradients by
    # more than ten times that bound.
    emb.zero_grad(set_to_none=True)
    torch.manual_seed(2)
    plain_backward(chunks, loss_fn)
    assert any((p.grad - g_plain[n]).abs().max() > 1e-2 * scale for n, p in emb.named_parameters() if n in g_plain)


def test_memory_grows_with_the_mini_batch_not_the_batch():
    # bench/gradcache_memory.py at the tiny shape: the plain step's peak of live tensor storage
    # grows with the batch (every forward's activations wait for the backward); GradCache's is
    # that of one mini-batch, whatever the batch.
    spec = importlib.util.spec_from_file_location("gradcache_memory", ROOT / "bench" / "gradcache_memory.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.main(["--shape", "tiny", "--batches", "4,16", "--mini-batch", "2", "--seq", "32"])
    peak = {(r["batch"], r["mini_batch"]): r["peak_bytes"] for r in rows}
    assert peak[16, None] > 3 * peak[4, None]
    assert peak[16, 2] < 1.2 * peak[4, 2] and peak[16, 2] < peak[4, None] / 2
    loss = {(r["batch"], r["mini_batch"]): r["loss"] for r in rows}
    assert loss[4, None] == loss[4, 2] and loss[16, None] == loss[16, 2]  # same masks, same loss
