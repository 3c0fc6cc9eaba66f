"""run.py encode: rows in input order, equal to encoding each text alone; bad input named."""
import json
import shutil

import numpy as np
import pytest
import torch

import run
from mltp.formats.checkpoint import load_model, weights_sha256
from mltp.cli import encode as encode_cli
from mltp.embedder import Embedder, EmbedderConfig
from mltp.pooling import PoolerConfig, build_pooler
from mltp.tokenizer import load_tokenizer

TEXTS = ["a short one", "a considerably longer text that pads the others in its batch", "mid length text",
         "z", "another fairly long sentence to sort before the short ones"]


@pytest.fixture
def saved(fixtures_dir, tmp_path):
    tiny = str(fixtures_dir / "tiny")
    torch.manual_seed(0)
    pooler = build_pooler(PoolerConfig(kind="mltp", hidden_size=64, num_layers=6, layers="middle4", layer_token="eos", num_latents=4))
    Embedder(load_model(tiny), load_tokenizer(tiny), pooler, EmbedderConfig(model=tiny)).save(tmp_path / "final")
    return tmp_path / "final"


def test_rows_follow_the_input_order(saved, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(encode_cli, "CHUNK", 2)  # several chunks, each sorted by length inside
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "vectors.npy"
    run.main(["encode", "--model", str(saved), "--input", str(tmp_path / "texts.txt"), "--output", str(out), "--batch-size", "2"])
    vectors = np.load(out)
    assert vectors.shape == (len(TEXTS), 64) and vectors.dtype == np.float32
    embedder = Embedder.load(saved)
    alone = np.stack([embedder.encode([t])[0].numpy() for t in TEXTS])  # (N, D), one text per forward
    # Unit vectors: an absolute bound is relative to their norm of 1, and 1e-5 is ~80 float32 ulps
    # for another batch's padding and matmul shapes.
    np.testing.assert_allclose(vectors, alone, rtol=0, atol=1e-5)
    err = capsys.readouterr().err
    assert "encoding [" in err and "5/5 texts" in err


def test_jsonl_and_instruction(saved, tmp_path):
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "v.npy"
    run.main(["encode", "--model", str(saved), "--input", str(tmp_path / "texts.jsonl"), "--output", str(out),
              "--instruction", "Retrieve semantically similar text."])
    expected = Embedder.load(saved).encode(TEXTS, instruction="Retrieve semantically similar text.").numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-5)  # unit vectors, as above
    assert not np.allclose(np.load(out), Embedder.load(saved).encode(TEXTS).numpy(), atol=1e-3)


def test_refuses_to_overwrite_unless_asked(saved, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("one\ntwo\n")
    out = tmp_path / "v.npy"
    out.write_bytes(b"keep me")
    argv = ["encode", "--model", str(saved), "--input", str(tmp_path / "t.txt"), "--output", str(out)]
    with pytest.raises(SystemExit) as e:
        run.main(argv)
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    run.main(argv + ["--overwrite"])
    assert np.load(out).shape == (2, 64)


@pytest.mark.parametrize("name, content, message", [
    ("t.txt", "one\n\nthree\n", "t.txt line 2: empty text"),
    ("t.txt", "", "holds no text"),
    ("t.jsonl", '{"text": "ok"}\n{"txt": "no"}\n', "t.jsonl line 2: field 'text'"),
    ("t.jsonl", '{"text": "ok"}\nnot json\n', "t.jsonl line 2: not valid JSON"),
    ("t.csv", "a\n", "expected a .txt or .jsonl"),
])
def test_bad_input_is_named(saved, tmp_path, capsys, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(SystemExit) as e:
        run.main(["encode", "--model", str(saved), "--input", str(tmp_path / name), "--output", str(tmp_path / "v.npy")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "v.npy").exists()


def test_model_must_be_a_saved_embedder(fixtures_dir, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("one\n")
    with pytest.raises(SystemExit) as e:
        run.main(["encode", "--model", str(fixtures_dir / "tiny"), "--input", str(tmp_path / "t.txt"), "--output", str(tmp_path / "v.npy")])
    assert e.value.code == 2 and "not a saved embedder" in capsys.readouterr().err


def test_a_long_encode_reports_progress_and_an_eta(fixtures_dir, monkeypatch):
    from mltp.hygiene.progress import Progress

    tiny = str(fixtures_dir / "tiny")
    pooler = build_pooler(PoolerConfig(kind="mean", hidden_size=64, num_layers=6))
    emb = Embedder(load_model(tiny), load_tokenizer(tiny), pooler, EmbedderConfig(model=tiny))
    lines = []
    emb.progress = lines.append
    monkeypatch.setattr(Progress, "EVERY", 0.0)  # a line after every batch
    texts = [f"text number {i} " * (1 + i % 5) for i in range(10)]
    emb.encode(texts, batch_size=4)
    assert [line.split(" texts")[0] for line in lines] == ["  encoded 4 of 10", "  encoded 8 of 10", "  encoded 10 of 10"]
    assert lines[-1].endswith("about 0 s left")


def test_a_saved_embedder_works_from_any_directory_and_names_a_missing_base(fixtures_dir, tmp_path, monkeypatch, capsys):
    # Trained with --model as typed, relative to the checkout: the saved embedder records the base
    # by its absolute path and weights' sha256, so encode works from anywhere; gone, it is named.
    base = tmp_path / "models" / "tiny"
    shutil.copytree(fixtures_dir / "tiny", base)
    monkeypatch.chdir(tmp_path)
    model = load_model("models/tiny")
    pooler = build_pooler(PoolerConfig(kind="mean", hidden_size=64, num_layers=6))
    Embedder(model, load_tokenizer("models/tiny"), pooler, EmbedderConfig(model="models/tiny")).save(tmp_path / "final")
    record = json.loads((tmp_path / "final" / "embedder.json").read_text())
    assert record["model"] == str(base.resolve()) and record["model_sha256"] == weights_sha256(base)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    expected = Embedder.load(tmp_path / "final").encode(TEXTS).numpy()
    run.main(["encode", "--model", str(tmp_path / "final"), "--input", str(write_texts(tmp_path)), "--output", "v.npy"])
    np.testing.assert_allclose(np.load("v.npy"), expected, rtol=0, atol=0)  # the same process, the same vectors
    shutil.rmtree(base)
    with pytest.raises(SystemExit) as e:
        run.main(["encode", "--model", str(tmp_path / "final"), "--input", str(write_texts(tmp_path)), "--output", "w.npy"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"its base model {base.resolve()} (weights sha256 {record['model_sha256']}) is not there" in err
    assert not (tmp_path / "elsewhere" / "w.npy").exists()


def write_texts(folder):
    (folder / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    return folder / "texts.txt"


def test_an_output_that_cannot_be_written_is_named_before_encoding(saved, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as e:
        run.main(["encode", "--model", str(saved), "--input", str(write_texts(tmp_path)),
                  "--output", str(tmp_path / "a-file" / "v.npy")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{tmp_path / 'a-file'} is a file, not a folder" in err and "encoding [" not in err
