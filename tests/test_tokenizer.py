"""Batch tokenisation: EOS always last, padding on the requested side, truncation keeps EOS."""
import json

import pytest
from tokenizers import Tokenizer as RawTokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

import mltp

VOCAB = {"<pad>": 0, "</s>": 1, "a": 2, "b": 3, "c": 4, "d": 5, "[UNK]": 6}


@pytest.fixture
def tok_dir(tmp_path):
    raw = RawTokenizer(WordLevel(VOCAB, unk_token="[UNK]"))
    raw.pre_tokenizer = Whitespace()
    raw.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "pad_token": "<pad>"}))
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_left_padding_and_eos(tok_dir):
    tok = mltp.load_tokenizer(tok_dir)
    ids, mask = tok.encode_batch(["a b c", "d"], padding_side="left")
    assert ids.tolist() == [[2, 3, 4, 1], [0, 0, 5, 1]]
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]


def test_right_padding(tok_dir):
    ids, mask = mltp.load_tokenizer(tok_dir).encode_batch(["a b c", "d"], padding_side="right")
    assert ids.tolist() == [[2, 3, 4, 1], [5, 1, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_truncation_keeps_eos(tok_dir):
    ids, _ = mltp.load_tokenizer(tok_dir).encode_batch(["a b c d a b"], max_length=3)
    assert ids.tolist() == [[2, 3, 1]]


def test_eos_falls_back_to_config_id(tok_dir):
    (tok_dir / "tokenizer_config.json").unlink()
    (tok_dir / "config.json").write_text(json.dumps({"eos_token_id": [1, 0]}))
    tok = mltp.load_tokenizer(tok_dir)
    assert tok.eos_token_id == 1 and tok.pad_token_id == 1


def test_errors_are_clear(tok_dir):
    tok = mltp.load_tokenizer(tok_dir)
    with pytest.raises(ValueError, match="empty"):
        tok.encode_batch([])
    with pytest.raises(ValueError, match="padding_side"):
        tok.encode_batch(["a"], padding_side="middle")
    (tok_dir / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match="end-of-text token"):
        mltp.load_tokenizer(tok_dir)
