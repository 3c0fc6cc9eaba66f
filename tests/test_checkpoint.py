"""Strict loading: every broken checkpoint gives an error naming the problem."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import mltp
from mltp.config import from_hf_config


@pytest.fixture
def llama_dir(fixtures_dir, tmp_path):
    target = tmp_path / "llama"
    shutil.copytree(fixtures_dir / "hf" / "llama", target)
    return target


def rewrite(directory, edit):
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors")


def test_missing_tensor_is_named(llama_dir):
    rewrite(llama_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"lacks tensor.*layers\.1\.mlp\.up_proj\.weight"):
        mltp.load_model(llama_dir)


def test_wrong_shape_names_tensor_and_file(llama_dir):
    def edit(t):
        t["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(3, 32)

    rewrite(llama_dir, edit)
    with pytest.raises(ValueError, match=r"k_proj\.weight' in model\.safetensors has shape \(3, 32\), expected \(16, 32\)"):
        mltp.load_model(llama_dir)


def test_unexpected_tensor_is_named(llama_dir):
    rewrite(llama_dir, lambda t: t.__setitem__("model.layers.0.extra.weight", torch.zeros(2)))
    with pytest.raises(ValueError, match=r"unexpected tensor 'model\.layers\.0\.extra\.weight'"):
        mltp.load_model(llama_dir)


def test_missing_config_key_is_named(llama_dir):
    cfg = json.loads((llama_dir / "config.json").read_text())
    del cfg["hidden_size"]
    (llama_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="lacks required key 'hidden_size'"):
        mltp.load_model(llama_dir)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mltp.load_model(tmp_path)


def test_unknown_name_lists_known_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="smollm2-135m"):
        mltp.load_model("no-such-model")


def test_sharded_checkpoint_loads_like_a_single_file(llama_dir, fixtures_dir):
    tensors = load_file(llama_dir / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for fname, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, llama_dir / fname)
    (llama_dir / "model.safetensors").unlink()
    index = {"weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (llama_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    sharded = mltp.load_model(llama_dir)
    single = mltp.load_model(fixtures_dir / "hf" / "llama")
    for (n1, p1), (n2, p2) in zip(sharded.state_dict().items(), single.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_missing_shard_is_named(llama_dir):
    tensors = load_file(llama_dir / "model.safetensors")
    (llama_dir / "model.safetensors").unlink()
    index = {"weight_map": {k: "model-00001-of-00001.safetensors" for k in tensors}}
    (llama_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="model-00001-of-00001.safetensors"):
        mltp.load_model(llama_dir)


def test_bf16_load_keeps_dtype(fixtures_dir):
    model = mltp.load_model(fixtures_dir / "hf" / "qwen2", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in model.parameters())


BASE = dict(model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)


@pytest.mark.parametrize(
    "extra, message",
    [
        (dict(model_type="gpt2"), "model_type 'gpt2' is not supported"),
        (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope scaling 'yarn' is not supported"),
        # beside rope_parameters, as a config converted between transformers versions may hold both
        (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rope_scaling={"type": "linear", "factor": 2.0}),
         "rope_scaling: rope scaling 'linear' is not supported"),
        (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    ],
)
def test_unsupported_config_is_refused(extra, message):
    with pytest.raises(ValueError, match=message):
        from_hf_config({**BASE, **extra})


def test_architecture_facts_come_from_config_fields():
    assert from_hf_config({**BASE, "model_type": "qwen2"}).qkv_bias is True
    assert from_hf_config({**BASE, "model_type": "qwen2"}).o_bias is False
    llama = from_hf_config({**BASE, "attention_bias": True})
    assert llama.qkv_bias and llama.o_bias
    qwen_window = from_hf_config({**BASE, "model_type": "qwen2", "sliding_window": 32, "use_sliding_window": False})
    assert qwen_window.sliding_window is None
    assert from_hf_config({**BASE, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}).rope_theta == 1e6
