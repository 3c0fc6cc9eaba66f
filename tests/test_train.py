"""The training loop on the tiny random model: what changes, that it learns, resume, NaN stop."""
import dataclasses
import json

import pytest
import torch

import mltp
from closeness import assert_close_to_scale
from mltp import packed
from mltp.data.mixture import Pair
from mltp.embedder import Embedder, EmbedderConfig
from mltp.lora import LoRAConfig, apply_lora, lora_layers
from mltp.pooling import PoolerConfig, build_pooler
from mltp.step import contrastive_step
from mltp.train import CheckpointError, NonFiniteLossError, TrainConfig, batch_texts, latest_checkpoint, plan_batches, train


def make_rows(n=48):
    # Pairs a model can learn to match: a query and a positive that share a distinctive word.
    words = ["apple", "river", "stone", "cloud", "piano", "tiger", "candle", "rocket", "garden", "silver", "forest", "window"]
    rows = []
    for i in range(n):
        w = words[i % len(words)]
        rows.append(Pair(query=f"{w} {i}", positive=f"all about the {w}", negative=f"nothing like {words[(i + 5) % len(words)]}", source="mrpc"))
    return rows


def make_embedder(fixtures_dir, kind="mltp", lora=True, layer_weights=True, dropout=0.1):
    model = mltp.load_model(fixtures_dir / "tiny")
    cfg = model.config
    pooler = build_pooler(PoolerConfig(kind=kind, hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
                                       layers="all", layer_token="eos", num_latents=8,
                                       layer_weights=layer_weights))
    lora_config = LoRAConfig(r=4, alpha=8, dropout=dropout) if lora else None
    if lora:
        apply_lora(model, lora_config)
    emb = Embedder(model, mltp.load_tokenizer(fixtures_dir / "tiny"), pooler, EmbedderConfig(model=str(fixtures_dir / "tiny")))
    return emb, lora_config


# max_length counts characters here (character-level tokenizer): the instruction alone is ~50.
CFG = dict(steps=8, batch_size=8, lr=3e-3, warmup=2, max_length=96, save_every=4, log_every=4, seed=3)


def test_only_lora_and_pooler_change(fixtures_dir, tmp_path):
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)
    before = {k: v.clone() for k, v in emb.state_dict().items()}
    train(emb, make_rows(), TrainConfig(**{**CFG, "steps": 2}), lora, tmp_path, log=lambda m: None)
    after = emb.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    assert all(".lora_" in k or k.startswith("pooler.") for k in changed), sorted(changed)[:5]
    assert any(".lora_B" in k for k in changed) and any(k.startswith("pooler.") for k in changed)


def test_training_lowers_the_loss(fixtures_dir, tmp_path):
    # Without W: the tiny random model's hidden states have norm ~0.2, so W ~ N(0,1) (norm ~8)
    # would swamp them and the pooler would see only W (SmolLM2's per-layer norms are 45-670).
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir, layer_weights=False)
    train(emb, make_rows(), TrainConfig(**{**CFG, "steps": 24, "lr": 1e-2, "save_every": 100}), lora, tmp_path, log=lambda m: None)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "train_history.jsonl").read_text().splitlines()]
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.3, (first, last)


def test_joint_forward_is_one_forward_with_the_same_loss_and_gradients(fixtures_dir):
    # Joint pads queries, positives and negatives together (to the longest of all) and runs the
    # model once; with dropout off it must give the loss and gradients of three separate forwards.
    rows = make_rows(8)
    rows[2] = dataclasses.replace(rows[2], negative=None)
    rows[5] = dataclasses.replace(rows[5], positive="a much longer positive text " * 2)  # lengths differ per group
    torch.manual_seed(0)
    emb, _ = make_embedder(fixtures_dir, dropout=0.0)
    with torch.no_grad():
        for name, p in emb.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained-looking adapter, so LoRA contributes to the gradients
    emb.train()
    results = {}
    for joint in (False, True):
        calls = []
        handle = emb.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
        emb.zero_grad(set_to_none=True)
        loss, n_tokens = contrastive_step(emb, batch_texts(emb, rows), TrainConfig(max_length=96, joint_forward=joint))
        handle.remove()
        grads = {n: p.grad.clone() for n, p in emb.named_parameters() if p.grad is not None}
        results[joint] = (loss.item(), n_tokens, grads, calls)
    (l_sep, t_sep, g_sep, c_sep), (l_joint, t_joint, g_joint, c_joint) = results[False], results[True]
    assert len(c_sep) == 3 and len(c_joint) == 1 and c_joint[0][0] == 8 + 8 + 7, (c_sep, c_joint)
    assert c_joint[0][1] > min(shape[1] for shape in c_sep)  # the joint batch really padded the short group
    assert t_sep == t_joint  # real tokens, not padded ones
    assert abs(l_sep - l_joint) < 1e-5 * abs(l_sep), (l_sep, l_joint)
    assert g_sep.keys() == g_joint.keys() and any("lora_A" in n for n in g_sep)
    # One padded forward instead of three: other matmul shapes, so float32 rounding of the largest
    # gradient entry, as test_gradcache.assert_same explains.
    scale = max(g.abs().max().item() for g in g_sep.values())
    for n in g_sep:
        torch.testing.assert_close(g_joint[n], g_sep[n], rtol=0, atol=1e-3 * scale, msg=n)


def test_resume_equals_uninterrupted(fixtures_dir, tmp_path):
    rows, cfg = make_rows(), TrainConfig(**CFG)
    torch.manual_seed(0)
    whole, lora = make_embedder(fixtures_dir)
    train(whole, rows, cfg, lora, tmp_path / "whole", log=lambda m: None)

    torch.manual_seed(0)
    first, lora = make_embedder(fixtures_dir)
    train(first, rows, cfg, lora, tmp_path / "split", log=lambda m: None, stop_after=4)  # "killed" after step 4
    assert latest_checkpoint(tmp_path / "split").name == "step-000004"
    torch.manual_seed(0)
    second, lora = make_embedder(fixtures_dir)  # a fresh process: same init, then the checkpoint
    logs = []
    summary = train(second, rows, cfg, lora, tmp_path / "split", log=logs.append)
    assert summary["first_step"] == 5 and any("resumed" in m for m in logs)
    # The same computations in the same order: 1e-5 of each tensor's largest entry (~80 float32
    # ulps) leaves room for rounding only; a lost or repeated step moves a weight by about lr (3e-3).
    for (k, a), (_, b) in zip(whole.state_dict().items(), second.state_dict().items()):
        assert_close_to_scale(b, a, 1e-5, k)


def test_a_pointer_to_a_missing_checkpoint_is_refused_and_deletes_nothing(fixtures_dir, tmp_path):
    # checkpoints/latest names a step that is not there: starting from step 1 would overwrite the
    # history and delete the checkpoint that does verify. The run stops naming both instead.
    rows, cfg = make_rows(), TrainConfig(**CFG)
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)
    train(emb, rows, cfg, lora, tmp_path, log=lambda m: None, stop_after=4)
    pointer = tmp_path / "checkpoints" / "latest"
    pointer.write_text("step-000008\n")
    history = (tmp_path / "train_history.jsonl").read_text()
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)
    with pytest.raises(CheckpointError, match=r"names step-000008, which is missing or incomplete; the newest whole "
                                              r"checkpoint here is step-000004"):
        train(emb, rows, cfg, lora, tmp_path, log=lambda m: None)
    assert (tmp_path / "checkpoints" / "step-000004" / "trainer.pt").exists()
    assert (tmp_path / "train_history.jsonl").read_text() == history
    pointer.write_text("step-000004\n")  # as the message says: the run resumes from it
    assert latest_checkpoint(tmp_path).name == "step-000004"


def test_a_batch_with_nothing_to_learn_is_warned_of_once(fixtures_dir, tmp_path):
    # Duplicate rows are false negatives of each other (masked): a batch of one row repeated has a
    # loss of 0. The run says so, once, rather than reporting a perfect loss in silence.
    rows = [Pair("the same query", "the same answer", None, "mrpc")] * 8
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)
    logs = []
    train(emb, rows, TrainConfig(**{**CFG, "steps": 2, "save_every": 100}), lora, tmp_path, log=logs.append)
    warned = [m for m in logs if "nothing to learn" in m]
    assert len(warned) == 1 and "step 1: all 8 rows of the batch have the same positive text" in warned[0], logs
    losses = [json.loads(line)["loss"] for line in (tmp_path / "train_history.jsonl").read_text().splitlines()]
    assert losses == [0.0, 0.0]
    logs.clear()
    train(*make_embedder(fixtures_dir)[:1], make_rows(), TrainConfig(**{**CFG, "steps": 1}), lora, tmp_path / "ok",
          log=logs.append)
    assert not [m for m in logs if "nothing to learn" in m]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(fixtures_dir, tmp_path):
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)
    rows, cfg = make_rows(), TrainConfig(**CFG)
    train(emb, rows, cfg, lora, tmp_path, log=lambda m: None, stop_after=4)
    with torch.no_grad():  # a frozen base weight: resuming restores adapter and pooler, not this
        emb.model.layers[2].mlp.down_proj.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5.*step-000004"):
        train(emb, rows, cfg, lora, tmp_path, log=lambda m: None)
    assert latest_checkpoint(tmp_path).name == "step-000004"


def test_batch_plan_is_seeded_and_covers_rows():
    rows = make_rows(40)
    cfg = TrainConfig(steps=10, batch_size=8, seed=1)
    plan = plan_batches(rows, cfg)
    assert plan == plan_batches(rows, cfg) and plan != plan_batches(rows, TrainConfig(steps=10, batch_size=8, seed=2))
    assert all(len(b) == 8 and len(set(b)) == 8 for b in plan)
    with pytest.raises(ValueError, match="fewer than one batch"):
        plan_batches(rows[:3], cfg)


def test_encode_restores_order_and_matches_single_texts(fixtures_dir, tmp_path):
    emb, lora = make_embedder(fixtures_dir, lora=False)
    texts = ["a short one", "a considerably longer text than the others here", "mid length text"]
    batched = emb.encode(texts, instruction="Retrieve text", batch_size=2)
    single = torch.cat([emb.encode([t], instruction="Retrieve text") for t in texts])
    # Unit vectors (the norm check below), so an absolute 1e-5 is relative to their size: ~80
    # float32 ulps for another batch's padding and matmul shapes.
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert torch.allclose(batched.norm(dim=-1), torch.ones(3))


def test_embedder_runs_and_keeps_only_what_its_pooler_reads(fixtures_dir):
    # A pooler over blocks 2 and 4 of 6: the embedder stops after block 4 and keeps 2 states, and
    # its vectors are the pooler's over the full forward.
    model = mltp.load_model(fixtures_dir / "tiny")
    cfg = model.config
    pooler = build_pooler(PoolerConfig(kind="mltp", hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
                                       layers="2,4", layer_token="eos", num_latents=8)).eval()
    emb = Embedder(model, mltp.load_tokenizer(fixtures_dir / "tiny"), pooler, EmbedderConfig(model=str(fixtures_dir / "tiny")))
    ids, mask = emb.batch(emb.tokenize(["a short one", "a considerably longer text"]))
    seen = []
    pooler.register_forward_pre_hook(lambda module, args: seen.append([h is not None for h in args[0]]))
    with torch.no_grad():
        ours = emb(ids, mask)
        full = pooler(packed.forward(model, ids, mask), mask)  # every block, every state
    assert emb.upto == 4 and seen[0] == [False, False, True, False, True]
    torch.testing.assert_close(ours, full, atol=0, rtol=0)


def test_saved_embedder_reloads_identically(fixtures_dir, tmp_path):
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)
    train(emb, make_rows(), TrainConfig(**{**CFG, "steps": 2}), lora, tmp_path, log=lambda m: None)
    emb.save(tmp_path / "final", lora)
    again = Embedder.load(tmp_path / "final")
    texts = ["apple 1", "all about the river"]
    # Loaded to encode: the adapter is folded into the base weights, for the same vectors.
    assert all(m.merged for m in lora_layers(again.model).values())
    # Unit vectors: 1e-5 (~80 float32 ulps of their norm) for the folded weights' other rounding.
    torch.testing.assert_close(emb.encode(texts), again.encode(texts), atol=1e-5, rtol=0)
    separate = Embedder.load(tmp_path / "final", merge=False)  # kept apart, to train further
    assert not any(m.merged for m in lora_layers(separate.model).values())
    torch.testing.assert_close(emb.encode(texts), separate.encode(texts), atol=1e-5, rtol=0)
    assert (tmp_path / "final" / "adapter_model.safetensors").exists()


def test_skipping_padding_trains_the_same_run(fixtures_dir, tmp_path, monkeypatch):
    # On the CPU the trainer skips the padding (mltp.packed): every step's loss and the trained
    # weights are those of the padded layout, LoRA dropout included.
    runs = {}
    for skip in (False, True):
        monkeypatch.setattr(packed, "packs_padding", lambda model, device, skip=skip: skip)
        torch.manual_seed(0)
        emb, lora = make_embedder(fixtures_dir, layer_weights=False)
        out = tmp_path / str(skip)
        train(emb, make_rows(), TrainConfig(**{**CFG, "steps": 4, "save_every": 100}), lora, out, log=lambda m: None)
        losses = [json.loads(line)["loss"] for line in (out / "train_history.jsonl").read_text().splitlines()]
        runs[skip] = losses, {k: v.clone() for k, v in emb.state_dict().items()}
    (padded, w_padded), (skipped, w_skipped) = runs[False], runs[True]
    assert len(padded) == 4
    # As tests/test_distributed.py: other matmul shapes, and AdamW turns a rounding-sized gradient
    # entry into an lr-sized move, so four steps carry rounding into the loss past float32's own
    # (relative 1e-4), and a weight may move by a sixth of lr (3e-3) on rounding alone.
    assert skipped == pytest.approx(padded, rel=1e-4)
    for k in w_padded:
        torch.testing.assert_close(w_skipped[k], w_padded[k], atol=5e-4, rtol=0, msg=k)
