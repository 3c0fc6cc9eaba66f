"""bench/bench.py in its transformers-free mode (`--baseline none`) at the tiny shape, on the CPU.

The transformers half needs transformers + peft, which CI lacks; everything the two halves share
(batches, parity measure, timing loop, FLOP count, table, JSON) is exercised here. FLOP counts are
checked against torch's own FlopCounterMode, which counts the matmuls the model actually runs.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mltp.config import from_hf_config
from mltp.model import Decoder, reference_attention

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("bench_script", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture
def one_thread():
    # A loaded 2-core box makes OpenMP barriers dominate tiny ops; restore the caller's setting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return Decoder(from_hf_config(bench.SHAPES["tiny"])).eval()


def test_cpu_run_without_transformers_writes_table_and_json(tmp_path, one_thread):
    stem = tmp_path / "tiny"
    result = bench.main(["--device", "cpu", "--shapes", "tiny", "--baseline", "none", "--batch", "3",
                         "--seq", "16", "--steps", "2", "--warmup", "0", "--threads", "1", "--out", str(stem),
                         "--modes", "encode,train,train-joint"])
    on_disk = json.loads(stem.with_suffix(".json").read_text())
    markdown = stem.with_suffix(".md").read_text()
    assert on_disk["table"] == markdown == result["table"]
    assert [(r["shape"], r["mode"]) for r in on_disk["rows"]] == [("tiny", "encode"), ("tiny", "train"), ("tiny", "train-joint")]
    header = "| shape | mode | mltp tok/s | transformers tok/s | ratio | mltp mem | hf mem | MFU mltp / hf | computing ops mltp / hf |"
    assert header in markdown and "| tiny | encode |" in markdown and "| tiny | train |" in markdown
    assert "torch " + torch.__version__ in markdown
    encode, train, joint = on_disk["rows"]
    # Operators per call: a training step dispatches its forward, backward and optimizer; the joint
    # step runs the model once instead of twice over the same texts, so it dispatches fewer.
    ops = [row["ops"]["mltp"] for row in (encode, joint, train)]
    assert 0 < ops[0]["ops"] < ops[1]["ops"] < ops[2]["ops"], ops
    assert all(0 < o["computing"] < o["ops"] for o in ops), ops  # some are views (transposes, head splits)
    assert joint["real_tokens"] == train["real_tokens"] and math.isfinite(joint["parity"]["first_loss"]["mltp"])
    assert joint["parity"]["first_loss"]["mltp"] == pytest.approx(train["parity"]["first_loss"]["mltp"], rel=1e-5)
    # Same seed, same batches: the encode batch holds 3 texts of 4..16 tokens.
    g = torch.Generator().manual_seed(0)
    _, mask = bench.make_batch(3, 16, 256, g, "cpu")
    assert encode["real_tokens"] == int(mask.sum())
    assert encode["parity"]["hidden_states_rel_error"] <= bench.PARITY_TOL[torch.float32]
    assert encode["parity"]["embedding_max_diff"] < 1e-4  # of unit vectors: relative to their norm of 1
    assert math.isfinite(train["parity"]["first_loss"]["mltp"])
    for row in (encode, train):
        assert row["tokens_per_s"]["mltp"] > 0 and 0 < row["mfu"]["mltp"]
        # On the CPU: the parameters, pooler (and optimizer state) + the live-tensor peak of a call.
        assert row["memory_bytes"]["mltp"] > bench.unique_bytes(tiny_model().parameters())
        assert "ratio" not in row and "transformers" not in row["tokens_per_s"]
    assert on_disk["goals"] == []  # no baseline, no goals


def test_join_left_padded_keeps_every_row_right_aligned():
    g = torch.Generator().manual_seed(0)
    a, b = bench.make_batch(3, 8, 50, g, "cpu"), bench.make_batch(2, 20, 50, g, "cpu")
    ids, mask = bench.join_left_padded([a, b])
    width = max(a[0].shape[1], b[0].shape[1])
    assert ids.shape == mask.shape == (5, width)
    for row, (src_ids, src_mask, i) in enumerate([(a[0], a[1], 0), (a[0], a[1], 1), (a[0], a[1], 2), (b[0], b[1], 0), (b[0], b[1], 1)]):
        n = int(src_mask[i].sum())
        assert int(mask[row].sum()) == n and torch.equal(ids[row, width - n:], src_ids[i, -n:])
        assert bool((ids[row, : width - n] == 0).all())


def test_layout_shapes_keep_depth_and_heads_at_a_tiny_width():
    for name, real in (("smollm2-layout", "smollm2-135m"), ("qwen2-layout", "qwen2-0.5b")):
        shape, full = bench.SHAPES[name], bench.SHAPES[real]
        for key in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "model_type"):
            assert shape[key] == full[key], (name, key)
        assert shape["hidden_size"] == 8 * full["num_attention_heads"] and shape["vocab_size"] == 256


def test_make_batch_is_left_padded_mixed_lengths_and_seeded():
    a = bench.make_batch(64, 40, 100, torch.Generator().manual_seed(3), "cpu")
    b = bench.make_batch(64, 40, 100, torch.Generator().manual_seed(3), "cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ids, mask = a
    lengths = mask.sum(1)
    assert int(lengths.min()) >= 10 and int(lengths.max()) == ids.shape[1] <= 40
    assert len(set(lengths.tolist())) > 5
    assert bool((mask[:, -1] == 1).all())  # left padding: every row ends on a real token
    assert bool((mask.diff(dim=1) >= 0).all())  # pads only before the text
    assert bool((ids[mask == 0] == 0).all()) and bool((ids[mask == 1] > 0).all())


def test_parity_measure_passes_a_correct_model_and_catches_a_wrong_one(one_thread):
    model = tiny_model()
    ids, mask = bench.make_batch(4, 12, 256, torch.Generator().manual_seed(1), "cpu")
    with torch.no_grad():
        good = model(ids, mask)
        reference = bench.unpadded_reference(model, ids, mask)
        wrong = model(ids)  # mask dropped: real tokens attend to the pads
    error = bench.states_rel_error(good, reference, mask)
    bench.check_parity(error, torch.float32, "tiny")
    bad = bench.states_rel_error(wrong, reference, mask)
    assert bad > 1e-2
    with pytest.raises(AssertionError, match="parity failed: tiny"):
        bench.check_parity(bad, torch.float32, "tiny")
    with pytest.raises(AssertionError, match="parity failed"):
        bench.check_parity(float("nan"), torch.float32, "nan states")
    with pytest.raises(ValueError, match="hidden states"):
        bench.states_rel_error(good[:-1], reference, mask)


def test_linear_flops_match_torch_flop_counter(one_thread):
    model = tiny_model()
    n = 11
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(torch.randint(1, 256, (1, n)))
    linear, _ = bench.forward_flops(model.config, [n])
    assert counter.get_total_flops() == linear  # only the linear layers are matmuls here


def test_attention_flops_are_half_the_full_square(one_thread):
    # The counter sees the unmasked square; causal attention does half of it.
    cfg = tiny_model().config
    H, K, Dh, n = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, 9
    q, k, v = torch.randn(1, H, n, Dh), torch.randn(1, K, n, Dh), torch.randn(1, K, n, Dh)
    with FlopCounterMode(display=False) as counter:
        reference_attention(q, k, v, None)
    _, attention = bench.forward_flops(cfg, [n])
    assert 2 * attention == cfg.num_hidden_layers * counter.get_total_flops()
    linear, attention = bench.forward_flops(cfg, [n])
    assert bench.train_flops(cfg, [n]) == 2 * linear + 3 * attention


def test_pooler_flops_match_torch_flop_counter(one_thread):
    cfg = tiny_model().config
    pooler = bench.make_pooler(cfg, "cpu")
    states = tuple(torch.randn(3, 7, cfg.hidden_size) for _ in range(cfg.num_hidden_layers + 1))
    with FlopCounterMode(display=False) as counter:
        pooler(states, torch.ones(3, 7, dtype=torch.long))
    assert counter.get_total_flops() == bench.pooler_flops(pooler.config, 3)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--shapes", "gpt5"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--modes", "encode,generate"])


def test_a_failing_shape_is_reported_and_the_others_still_run(tmp_path, one_thread, monkeypatch):
    # 9 heads do not divide a width of 64: the config is refused when the shape is built.
    broken = dict(bench.SHAPES["tiny"], num_attention_heads=9)
    monkeypatch.setitem(bench.SHAPES, "broken", broken)
    result = bench.main(["--device", "cpu", "--shapes", "broken,tiny", "--baseline", "none", "--batch", "2",
                         "--seq", "8", "--steps", "1", "--warmup", "0", "--modes", "encode"])
    assert [(r["shape"], r["mode"]) for r in result["rows"]] == [("tiny", "encode")]
    assert list(result["meta"]["errors"]) == ["broken"] and "- FAILED broken:" in result["table"]
    assert {"goal": f"broken: did not finish ({result['meta']['errors']['broken']})", "pass": False} in result["goals"]


def test_a_run_cut_short_keeps_the_shapes_it_finished(tmp_path, one_thread, monkeypatch):
    # A device call's timeout kills the benchmark mid-shape; simulated by an interrupt in the second
    # shape. The first shape's row must already be on disk, marked partial.
    monkeypatch.setitem(bench.SHAPES, "second", bench.SHAPES["tiny"])
    real = bench.bench_shape

    def cut(name, *rest):
        if name == "second":
            raise KeyboardInterrupt
        return real(name, *rest)

    monkeypatch.setattr(bench, "bench_shape", cut)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--device", "cpu", "--shapes", "tiny,second", "--baseline", "none", "--batch", "2", "--seq", "8",
                    "--steps", "1", "--warmup", "0", "--modes", "encode", "--out", str(tmp_path / "cut")])
    saved = json.loads((tmp_path / "cut.json").read_text())
    assert [r["shape"] for r in saved["rows"]] == ["tiny"] and saved["meta"]["unfinished"] == ["second"]
    assert "- PARTIAL: written before second ran" in (tmp_path / "cut.md").read_text()
    assert {"goal": "second: not run yet", "pass": False} in saved["goals"]


def test_bf16_parity_is_judged_against_an_fp32_reference(one_thread):
    # bf16 on the CPU, no transformers: mltp in bf16 against the same weights run in fp32.
    result = bench.main(["--device", "cpu", "--shapes", "tiny", "--baseline", "none", "--dtype", "bf16",
                         "--batch", "3", "--seq", "16", "--steps", "1", "--warmup", "0", "--modes", "encode"])
    parity = result["rows"][0]["parity"]
    assert 0 < parity["mltp_vs_fp32"] <= bench.PARITY_TOL[torch.bfloat16] and parity["transformers_vs_fp32"] is None
    assert not result["meta"]["errors"]


def test_low_precision_parity_rule():
    bench.check_parity_low_precision(0.13, 0.12, "as far from fp32 as transformers")
    bench.check_parity_low_precision(0.015, 0.004, "within the absolute slack")
    with pytest.raises(AssertionError, match="more than"):
        bench.check_parity_low_precision(0.2, 0.12, "further than transformers")
    with pytest.raises(AssertionError, match="more than"):
        bench.check_parity_low_precision(float("nan"), 0.12, "nan")
    with pytest.raises(AssertionError, match="more than"):
        bench.check_parity_low_precision(0.06, None, "no transformers: fixed limit")


def test_lora_merge_benchmark_compares_the_same_vectors(fixtures_dir, tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("lora_merge", ROOT / "bench" / "lora_merge.py")
    lora_merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lora_merge)
    result = lora_merge.main(["--model", str(fixtures_dir / "tiny"), "--device", "cpu", "--texts", "6", "--reps", "1",
                              "--out", str(tmp_path / "merge")])
    assert result["max_abs_diff"] < 1e-5  # merging must not change the vectors (unit ones: ~80 float32 ulps)
    # Unmerged, each of a block's 7 projections adds its adapter's A and B matmuls, scale and add.
    layers = 6  # tests/fixtures/tiny
    assert result["ops"]["separate"]["computing"] - result["ops"]["merged"]["computing"] == 4 * 7 * layers
    assert set(result["median_seconds"]) == {"separate", "merged"} and result["speedup"] > 0
    assert json.loads((tmp_path / "merge.json").read_text())["ops"] == result["ops"]
    assert "| merged |" in (tmp_path / "merge.md").read_text()


def test_live_bytes_counts_fresh_storage_until_freed():
    a = torch.zeros(1000)  # made before: not counted
    with bench.LiveBytes() as live:
        b = a * 2  # 4,000 bytes
        v = b.view(10, 100).t()  # views allocate nothing
        b.add_(1)  # in place: nothing
        c = torch.ones(500, dtype=torch.float64)  # 4,000 more: peak 8,000
        del b, v, c
        d = torch.ones(250)  # 1,000 bytes, after 8,000 were freed
        assert live.live == 1000
    assert live.peak == 8000
    del d
    assert live.live == 0


def test_result_files_keep_a_dotted_stem(tmp_path):
    from mltp.hygiene.atomic import atomic_write_stem

    atomic_write_stem(tmp_path / "cpu-qwen2-0.5b", {"a": 1}, "| a |\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu-qwen2-0.5b.json", "cpu-qwen2-0.5b.md"]


def test_encode_peak_splits_decoder_and_pooler(one_thread):
    spec = importlib.util.spec_from_file_location("encode_peak", ROOT / "bench" / "encode_peak.py")
    encode_peak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(encode_peak)
    rows = encode_peak.main(["--shapes", "tiny", "--baseline", "none", "--batch", "2", "--seq", "16", "--dtype", "fp32"])
    decoder, with_pooler = rows
    assert (decoder["side"], decoder["call"], with_pooler["call"]) == ("mltp", "decoder", "decoder + pooler")
    # The states stay alive while the pooler runs, so its peak sits on top of theirs.
    assert 0 < decoder["peak_bytes"] <= with_pooler["peak_bytes"] and decoder["at"]
    # A pooler over block 1 of 2: the decoder stops there and holds one state, not three.
    few, _ = encode_peak.main(["--shapes", "tiny", "--baseline", "none", "--batch", "2", "--seq", "16", "--dtype", "fp32",
                               "--layers", "1"])
    assert few["layers"] == "1" and 0 < few["peak_bytes"] < decoder["peak_bytes"]
