"""run.py export: sentence-transformers loads the directory and encodes exactly as mltp does.

The reference is mltp's own `Embedder.encode` on the saved run; the other side is
sentence-transformers running transformers' decoder on the merged checkpoint, with mltp's pooler
classes over its hidden states. A wrong position, mask, EOS, prompt or merge moves the vectors far
beyond the tolerance.
"""
import json

import numpy as np
import pytest
import torch

import run
from mltp.formats import gguf as mgguf
from mltp.formats.checkpoint import load_model
from mltp.embedder import Embedder, EmbedderConfig
from mltp.formats.export import POOLING_FOLDER, export, prompt_prefix
from mltp.lora import LoRAConfig, apply_lora, lora_layers
from mltp.pooling import KINDS, PoolerConfig, build_pooler, load_pooler, save_pooler
from mltp.tokenizer import load_tokenizer

pytest.importorskip("sentence_transformers", reason="the export tests need the `st` extra (sentence-transformers, transformers)")
from sentence_transformers import SentenceTransformer  # noqa: E402

TEXTS = ["hello world", "A much longer sentence, with many more words in it than the others.", "x",
         "the cat sat on the mat", "Paris is the capital of France."]
STS = "Retrieve semantically similar text."


def lora_embedder(model_dir: str, kind: str, causal: bool, seed: int = 0) -> tuple[Embedder, LoRAConfig]:
    """A 'trained' embedder: non-zero LoRA (so the merge matters) and a random pooler."""
    torch.manual_seed(seed)
    model = load_model(model_dir)
    lora = LoRAConfig(r=4, alpha=8)
    apply_lora(model, lora)
    for layer in lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    cfg = model.config
    pooler = build_pooler(PoolerConfig(kind=kind, hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
                                       layers="middle4", layer_token="eos" if causal else "mean",
                                       tokens="eos" if causal else "all", num_latents=8))
    return Embedder(model, load_tokenizer(model_dir), pooler, EmbedderConfig(model=model_dir, causal=causal)), lora


def assert_same_vectors(reference: Embedder, st, texts=TEXTS):
    for side in ("left", "right"):
        reference.config.padding_side = st[0].padding_side = side
        for instruction, prompt_name in ((None, None), (STS, "STSBenchmark")):
            ours = reference.encode(texts, instruction=instruction).numpy()  # (N, D)
            theirs = st.encode(texts, prompt_name=prompt_name, batch_size=3, convert_to_numpy=True)  # (N, D)
            assert theirs.shape == ours.shape
            # Unit vectors: absolute is relative to their norm of 1; ~80 float32 ulps for another
            # implementation's order of the same sums.
            np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5, err_msg=f"{side} padding, prompt {prompt_name}")


def load_both(saved, st_dir):
    return Embedder.load(saved), SentenceTransformer(str(st_dir), trust_remote_code=True, device="cpu")


# Every kind with causal attention; the bidirectional mask (which only the decoder sees) once.
@pytest.mark.parametrize("kind, causal", [(kind, True) for kind in KINDS] + [("mltp", False)],
                         ids=[*KINDS, "mltp-bidirectional"])
def test_tiny_export_encodes_as_mltp(fixtures_dir, tmp_path, kind, causal):
    embedder, lora = lora_embedder(str(fixtures_dir / "tiny"), kind, causal)
    embedder.save(tmp_path / "final", lora)
    export(tmp_path / "final", tmp_path / "st", log=lambda _: None)
    assert_same_vectors(*load_both(tmp_path / "final", tmp_path / "st"))


def test_export_directory_is_a_plain_hf_checkpoint(fixtures_dir, tmp_path):
    from safetensors import safe_open

    embedder, lora = lora_embedder(str(fixtures_dir / "tiny"), "mltp", True)
    embedder.save(tmp_path / "final", lora)
    export(tmp_path / "final", tmp_path / "st", log=lambda _: None)
    out = tmp_path / "st"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaModel"] and cfg["dtype"] == "float32"
    with safe_open(out / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
    assert "layers.0.self_attn.q_proj.weight" in names and not any("lora" in n for n in names)
    # mltp reads it back as a plain checkpoint holding the merged weights.
    merged = Embedder.load(tmp_path / "final").model.state_dict()
    plain = load_model(out).state_dict()
    assert set(plain) == {n for n in merged if "lora" not in n}
    for name, t in plain.items():
        torch.testing.assert_close(t, merged[name], rtol=0, atol=0)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["mltp.formats.st_module.MLTPDecoder", "mltp.formats.st_module.MLTPPooling"]
    prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["STSBenchmark"] == "Instruct: Retrieve semantically similar text.\nQuery: "
    assert (out / POOLING_FOLDER / "pooler.safetensors").exists()


def test_prompt_prefix_refuses_a_template_that_does_not_end_in_the_text():
    assert prompt_prefix("Instruct: {instruction}\nQuery: {text}", "go") == "Instruct: go\nQuery: "
    with pytest.raises(ValueError, match="must end with"):
        prompt_prefix("{text} -- {instruction}", "go")


def test_cli_export_refuses_to_overwrite_and_names_bad_input(fixtures_dir, tmp_path, capsys):
    embedder, lora = lora_embedder(str(fixtures_dir / "tiny"), "eos", True)
    embedder.save(tmp_path / "final", lora)
    run.main(["export", str(tmp_path / "final"), "--to", str(tmp_path / "st")])
    assert "trust_remote_code=True" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        run.main(["export", str(tmp_path / "final"), "--to", str(tmp_path / "st")])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err
    run.main(["export", str(tmp_path / "final"), "--to", str(tmp_path / "st"), "--overwrite"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "st"]  # no temporary left behind
    with pytest.raises(SystemExit) as e:
        run.main(["export", str(tmp_path / "nowhere"), "--to", str(tmp_path / "st2")])
    assert e.value.code == 2 and "nowhere" in capsys.readouterr().err


def test_default_model_export_encodes_as_mltp_for_every_kind(tmp_path):
    # One export of the real model; each pooler kind then replaces the pooler on both sides, read
    # back from its files, so the 540 MB checkpoint is written and loaded once.
    model_dir = str(mgguf.default_model_dir("smollm2-135m"))
    embedder, lora = lora_embedder(model_dir, "mltp", True)
    embedder.save(tmp_path / "final", lora)
    export(tmp_path / "final", tmp_path / "st", log=lambda _: None)
    reference, st = load_both(tmp_path / "final", tmp_path / "st")
    cfg = embedder.model.config
    for kind in KINDS:
        torch.manual_seed(1)
        pooler = build_pooler(PoolerConfig(kind=kind, hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers,
                                           layers="middle4", layer_token="eos", num_latents=8))
        save_pooler(pooler, tmp_path / "pooler")
        reference = Embedder(reference.model, reference.tokenizer, load_pooler(tmp_path / "pooler"), reference.config)
        st[1] = type(st[1]).load(str(tmp_path), subfolder="pooler")
        assert_same_vectors(reference, st, TEXTS[:3])
