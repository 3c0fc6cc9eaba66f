"""Two ranks over gloo give one rank's loss and gradients on the same global batch (mltp.distributed).

Each test starts its processes with a deadline and kills them past it, so a hung collective fails
the test instead of the suite. One thread per process: the ranks share the CPU with everything else.
"""
import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import run
from mltp import cli, distributed
from mltp.gradcache import gradcache_step
from mltp.step import contrastive_step
from mltp.train import TrainConfig, batch_texts, latest_checkpoint, train
from test_gradcache import hard_batch, trained_looking, written_out_step
from test_train import CFG, make_embedder, make_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_CONFIGS = {f"{'joint' if joint else 'separate'}-{mini}": TrainConfig(max_length=96, joint_forward=joint, mini_batch=mini)
                for joint in (False, True) for mini in (None, 3)}


def spawn(fn, *args, world=2, timeout=240):
    """Run fn(rank, world, *args) in `world` processes; fail the test if they outlive `timeout`."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # read by the children as they start
    try:
        context = mp.start_processes(fn, args=(world, *args), nprocs=world, join=False, start_method="spawn")
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"{world} ranks still running after {timeout} s")


def join_group(rank, world, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)


def grads(emb):
    return {n: p.grad.clone() for n, p in emb.named_parameters() if p.grad is not None}


def one_step(emb, rows, cfg):
    # What the trainer does per step: shard, embed and back-propagate, average over ranks.
    emb.zero_grad(set_to_none=True)
    step_fn = gradcache_step if cfg.mini_batch else contrastive_step
    loss, n_tokens = step_fn(emb, batch_texts(emb, distributed.shard(rows)), cfg)
    distributed.average_gradients([p for p in emb.parameters() if p.requires_grad])
    return loss.item(), n_tokens, grads(emb)


def step_on_rank(rank, world, tmp, fixtures_dir):
    join_group(rank, world, tmp)
    torch.manual_seed(0)
    emb = trained_looking(make_embedder(fixtures_dir, dropout=0.0)[0])
    out = {name: one_step(emb, hard_batch(), cfg) for name, cfg in STEP_CONFIGS.items()}
    torch.save(out, f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_give_one_ranks_loss_and_gradients(fixtures_dir, tmp_path):
    # hard_batch: rank 0 holds rows 0-3 (row 3 without a hard negative: 3 vs 4 negatives per
    # rank), rank 1 rows 4-7; row 6's positive is row 1's and row 4's negative is row 0's
    # positive, so false negatives cross ranks both ways. A gather that paired a query with
    # another rank's negatives, or keys out of order, moves the loss.
    spawn(step_on_rank, tmp_path, fixtures_dir)
    torch.manual_seed(0)
    emb = trained_looking(make_embedder(fixtures_dir, dropout=0.0)[0])
    for name, cfg in STEP_CONFIGS.items():
        # The reference is the step written out on one process, whole batch.
        emb.zero_grad(set_to_none=True)
        reference = written_out_step(emb, hard_batch(), cfg)
        for rank in (0, 1):
            loss, n_tokens, g = torch.load(tmp_path / f"rank{rank}.pt")[name]
            # The shards sum the same ~1,600 token terms in another order and other matmul shapes,
            # so only float32 rounding may differ: the loss to 1e-5 of itself (~80 ulps), each
            # gradient entry to 1e-3 of the largest one, since a block's gradient sums terms that
            # cancel to far less than their own size. A wrong pairing moves both by percents.
            assert n_tokens == reference[1] and loss == pytest.approx(reference[0], rel=1e-5), (name, rank, loss, reference[0])
            assert g.keys() == reference[2].keys() and any("lora_A" in n for n in g)
            scale = max(r.abs().max().item() for r in reference[2].values())
            for n in g:
                torch.testing.assert_close(g[n], reference[2][n], rtol=0, atol=1e-3 * scale,
                                           msg=lambda m: f"{name} rank {rank} {n} (largest gradient {scale:.3g}): {m}")


def training_rows():
    rows = make_rows()
    for i in range(0, len(rows), 5):
        rows[i] = dataclasses.replace(rows[i], negative=None)  # ranks then hold different numbers of negatives
    return rows


def train_on_rank(rank, world, tmp, fixtures_dir, stop_after):
    join_group(rank, world, tmp)
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir, dropout=0.0)
    train(emb, training_rows(), TrainConfig(**CFG, mini_batch=5), lora, tmp / "run", log=print, stop_after=stop_after)
    if rank == 0:
        torch.save(emb.state_dict(), tmp / f"state-{stop_after}.pt")
    dist.destroy_process_group()


def test_a_killed_two_rank_run_resumes_to_the_one_rank_run(fixtures_dir, tmp_path):
    torch.manual_seed(0)
    whole, lora = make_embedder(fixtures_dir, dropout=0.0)
    train(whole, training_rows(), TrainConfig(**CFG), lora, tmp_path / "whole", log=lambda m: None)

    spawn(train_on_rank, tmp_path, fixtures_dir, 4)  # "killed" after step 4
    assert latest_checkpoint(tmp_path / "run").name == "step-000004"
    (tmp_path / "rendezvous").unlink(missing_ok=True)
    spawn(train_on_rank, tmp_path, fixtures_dir, None)
    history = (tmp_path / "run" / "train_history.jsonl").read_text().splitlines()
    assert [json.loads(h)["step"] for h in history] == list(range(1, 9))  # rank 0 alone wrote it
    reference = (tmp_path / "whole" / "train_history.jsonl").read_text().splitlines()
    # Relative 1e-4: shards and mini-batches are other matmul shapes (the padding is skipped on
    # the CPU), and AdamW turns a rounding-sized gradient entry into an lr-sized move (the weights
    # check below), so eight steps at lr 3e-3 carry rounding into the loss well past float32's own.
    # A resume that lost or repeated a step moves the loss by percents.
    for ours, theirs in zip(history, reference):
        assert json.loads(ours)["loss"] == pytest.approx(json.loads(theirs)["loss"], rel=1e-4), (ours, theirs)
    # The weights to a sixth of one step's largest move (lr 3e-3): AdamW divides each gradient by
    # its own running size, so an entry whose gradient is near zero moves by up to lr on rounding
    # alone. The gradients themselves agree to 1e-6 (the test above).
    resumed = torch.load(tmp_path / "state-None.pt")
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed[k], v, atol=5e-4, rtol=0, msg=k)


def test_torchrun_runs_the_main_job_on_two_ranks(fixtures_dir, data_dir, tmp_path):  # evaluates: needs the data
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "run.py",
               "--model", str(fixtures_dir / "tiny"), "--steps", "2", "--batch-size", "4", "--max-length", "96",
               "--mini-batch", "3", "--suite", "quick", "--tasks", "BIOSSES", "--device", "cpu", "--latents", "4",
               "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert record["ranks"] == 2 and record["config"]["ranks"] == 2 and record["train"]["ranks"] == 2
    assert record["train"]["steps_run"] == 2 and record["config"]["mini_batch"] == 3 and "BIOSSES" in record["tasks"]
    log = (out / "log.txt").read_text()
    assert "on 2 ranks of 2 queries, candidates from every rank" in log and "GradCache mini-batches of 3 texts" in log
    assert log.count("wrote ") == 1 and done.stdout.count("BIOSSES") == log.count("BIOSSES")  # evaluated once
    assert len((out / "train_history.jsonl").read_text().splitlines()) == 2
    assert latest_checkpoint(out).name == "step-000002"


def test_torchrun_settings_are_checked_before_any_work(fixtures_dir, monkeypatch, capsys):
    tiny = str(fixtures_dir / "tiny")
    assert cli.parse(["--mini-batch", "4"])[0].mini_batch == 4 and cli.parse([])[0].mini_batch is None
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--model", tiny, "--device", "cpu", "--mini-batch", "0"])
    assert exit_info.value.code == 2 and "--mini-batch must be >= 1" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node 2 sets it
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--model", tiny, "--device", "cpu", "--batch-size", "5"])
    assert exit_info.value.code == 2 and "--batch-size 5 does not split evenly over 2 ranks" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run.main(["ablation", "--model", tiny, "--device", "cpu"])
    assert exit_info.value.code == 2 and "torchrun runs the main job (one configuration) only, not `ablation`" in capsys.readouterr().err
