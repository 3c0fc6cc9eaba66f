"""mltp's MLTP pooler against the OFFICIAL one's output (yixuantt/PoolingAndAttn PerceiverResampler).

The fixture is the official code's own output at fixed small weights, written by
scripts/fixtures/official_mltp.py (run against the official checkout; the commit is in the file's
metadata). Only the tensor names are translated here; the math under test is mltp's.
"""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mltp.pooling import PoolerConfig, build_pooler

# official state_dict name -> mltp MLTPPooler name. The official PreNorm's `norm` normalises its
# `x`, which is the per-block vectors (mltp's context); its `norm_context` the latents (mltp's queries).
NAMES = {
    "latents": "latents",
    "cross_attend_blocks.0.norm.weight": "block.norm_context.weight",
    "cross_attend_blocks.0.norm.bias": "block.norm_context.bias",
    "cross_attend_blocks.0.norm_context.weight": "block.norm_query.weight",
    "cross_attend_blocks.0.norm_context.bias": "block.norm_query.bias",
    "cross_attend_blocks.0.fn.to_q.weight": "block.to_q.weight",
    "cross_attend_blocks.0.fn.to_kv.weight": "block.to_kv.weight",
    "cross_attend_blocks.0.fn.to_out.weight": "block.to_out.weight",
    "cross_attend_blocks.1.norm.weight": "block.norm_ff.weight",
    "cross_attend_blocks.1.norm.bias": "block.norm_ff.bias",
    "cross_attend_blocks.1.fn.net.0.weight": "block.ff_in.weight",
    "cross_attend_blocks.1.fn.net.0.bias": "block.ff_in.bias",
    "cross_attend_blocks.1.fn.net.2.weight": "block.ff_out.weight",
    "cross_attend_blocks.1.fn.net.2.bias": "block.ff_out.bias",
}


@pytest.fixture(scope="module")
def official(fixtures_dir):
    path = fixtures_dir / "official" / "mltp.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    return load_file(str(path)), metadata


def mltp_pooler(tensors, metadata, names=NAMES):
    """mltp's MLTP pooler at the official widths, carrying the official weights."""
    widths = json.loads(metadata["widths"])
    S = widths["num_layers"]  # the official M3 reads every block, 1..L
    pooler = build_pooler(PoolerConfig(
        kind="mltp", hidden_size=widths["hidden_size"], num_layers=widths["num_layers"], layers="all",
        layer_token="eos", layer_weights=True, num_latents=widths["num_latents"],
        num_heads=widths["num_heads"], head_dim=widths["head_dim"], ff_mult=widths["ff_mult"],
    )).double()
    state = {ours: tensors[f"official/{theirs}"] for theirs, ours in names.items()}
    # The official layer table is nn.Embedding(32, D) looked up at arange(S): its first S rows are W.
    state["layer_weights"] = tensors["official/pos_emb.weight"][:S]
    pooler.load_state_dict(state, strict=True)
    return pooler.eval()


def pooled(pooler, tensors):
    hidden = tuple(tensors["inputs/hidden_states"].unbind(0))  # L+1 x (B, T, D)
    with torch.no_grad():
        return pooler(hidden, tensors["inputs/attention_mask"])


def test_fixture_names_its_upstream_and_covers_every_official_tensor(official):
    tensors, metadata = official
    assert metadata["upstream"] == "https://github.com/yixuantt/PoolingAndAttn"
    assert len(metadata["commit"]) == 40
    official_names = {k[len("official/"):] for k in tensors if k.startswith("official/")}
    assert official_names == set(NAMES) | {"pos_emb.weight"}
    assert tensors["official/pos_emb.weight"].shape[0] == json.loads(metadata["widths"])["table_rows"]


def test_mltp_pooler_reproduces_the_official_output(official):
    tensors, metadata = official
    ours = pooled(mltp_pooler(tensors, metadata), tensors)
    torch.testing.assert_close(ours, tensors["expected"], atol=1e-12, rtol=0)


def test_swapped_norms_do_not_reproduce_it(official):
    # The comparison can fail: mapping the official query and context norms the other way round
    # (the naming trap the mapping above documents) moves the output well past the tolerance.
    tensors, metadata = official
    swapped = dict(NAMES)
    for part in ("weight", "bias"):
        a, b = f"cross_attend_blocks.0.norm.{part}", f"cross_attend_blocks.0.norm_context.{part}"
        swapped[a], swapped[b] = NAMES[b], NAMES[a]
    ours = pooled(mltp_pooler(tensors, metadata, swapped), tensors)
    assert (ours - tensors["expected"]).abs().max() > 1e-3
