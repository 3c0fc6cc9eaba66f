"""The helpers training and evaluation share: one file opener, one atomic writer, one converter."""
import gzip
import os
import random

import numpy as np
import pytest
import torch

import eval.tasks
from eval import loaders
from mltp.hygiene.atomic import atomic_write_text
from mltp.data.sources import STS_INSTRUCTION, trecqa_pairs
from mltp.hygiene.textfile import open_text

BOM = "\ufeff"


@pytest.mark.parametrize("gz", [False, True])
def test_evaluation_reads_a_file_that_starts_with_a_byte_order_mark(tmp_path, gz):
    # A mark left in the text would make the first JSON line unparsable.
    path = tmp_path / ("queries.jsonl.gz" if gz else "queries.jsonl")
    data = (BOM + '{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n').encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    with open_text(path) as f:
        assert not f.read().startswith(BOM)
    assert loaders.read_beir_queries(path) == {"q1": "first", "q2": "second"}


def test_training_reads_a_file_that_starts_with_a_byte_order_mark(tmp_path):
    # TREC-QA's reader checks its header, which a mark left in the text would spoil.
    path = tmp_path / "training" / "trecqa_wang" / "train.csv"
    path.parent.mkdir(parents=True)
    path.write_text(BOM + "qtext,label,atext\nWho?,1,Ann.\nWho?,0,Bob.\n", encoding="utf-8")
    assert [(p.query, p.positive, p.negative) for p in trecqa_pairs(tmp_path, random.Random(0))] == [("Who?", "Ann.", "Bob.")]


def test_a_missing_file_names_its_path_on_both_sides(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.tsv"):
        open_text(tmp_path / "nowhere.tsv")
    with pytest.raises(FileNotFoundError, match="MANIFEST.md"):  # evaluation also says where it comes from
        loaders.open_text(tmp_path / "sts" / "stsbenchmark" / "sts-test.csv")


def test_atomic_write_keeps_the_old_file_and_no_temp_file_on_failure(tmp_path):
    path = tmp_path / "report.md"
    atomic_write_text(path, "old\n")
    with pytest.raises(TypeError):
        atomic_write_text(path, None)  # fails inside the write, after the temp file exists
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_atomic_write_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}\n")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


class _Encoder:
    def __init__(self, convert):
        self.convert = convert

    def encode(self, texts, instruction=None):
        rng = np.random.default_rng(len(texts))
        return self.convert(rng.standard_normal((len(texts), 3)))  # float64


def test_embeddings_are_stored_alike_whatever_type_the_encoder_returns():
    texts = ["b", "a", "b"]
    as_array = eval.tasks.encode_texts(_Encoder(lambda x: x), texts, None)
    as_tensor = eval.tasks.encode_texts(_Encoder(torch.from_numpy), texts, None)
    assert as_array.dtype == as_tensor.dtype == np.float32
    np.testing.assert_array_equal(as_array, as_tensor)
    np.testing.assert_array_equal(as_array[0], as_array[2])


def test_training_and_evaluation_use_one_sts_instruction():
    assert eval.tasks.STS_INSTRUCTION is STS_INSTRUCTION
    assert {eval.tasks.TASKS[n].instruction for n in ("STSBenchmark", "SICK-R", "BIOSSES")} == {STS_INSTRUCTION}
