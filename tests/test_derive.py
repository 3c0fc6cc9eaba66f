"""Each derivation on small inputs written here, with its output written out by hand.

That they reproduce the staged files byte for byte is shown on the real upstream snapshots by
scripts/check_derivations.py, and for the files made from other data files by test_manifest.py.
"""
from __future__ import annotations

import gzip
import io
import json
import zipfile

import pytest

from eval import derive as D


def test_every_derivation_is_registered_and_tested_here():
    tested = {name.removeprefix("test_").split("__")[0] for name in globals() if name.startswith("test_")}
    assert set(D.DERIVATIONS) <= tested


def test_copy():
    assert D.copy(b"x\r\n") == b"x\r\n"


def test_gunzip():
    assert D.gunzip(gzip.compress(b"a\tb\n")) == b"a\tb\n"


def test_csv_rows():
    upstream = b'id,text\r\n1,first\r\n2,"a, b"\r\n3,"\tq ""x"""\r\n4,last'
    # rows 2..4: re-quoted by csv.writer's defaults (a tab alone needs no quotes), CRLF after every row
    assert D.csv_rows(upstream, 2, 4) == b'id,text\r\n2,"a, b"\r\n3,"\tq ""x"""\r\n4,last\r\n'
    assert D.csv_rows(b'h\r\n"a\tb"\r\n', 1, 1) == b"h\r\na\tb\r\n"


def test_anserini_topics_to_beir():
    topics = gzip.compress("7\tWhat is \"x\"?\n12\tcaf\u00e9\n".encode())
    assert D.anserini_topics_to_beir(topics) == (
        b'{"_id": "7", "text": "What is \\"x\\"?", "metadata": {}}\n'
        b'{"_id": "12", "text": "caf\\u00e9", "metadata": {}}\n')


def test_trec_qrels_to_beir():
    assert D.trec_qrels_to_beir(b"q1 0 d9 1\nq2 Q0 d3 2\n") == b"query-id\tcorpus-id\tscore\nq1\td9\t1\nq2\td3\t2\n"


def test_imdb_jsonl():
    train = {"pos/10_9.txt": b"good", "neg/2_1.txt": "bad \u00e9<br />".encode(), "urls_pos.txt": b"x"}
    val = {"neg/1_3.txt": b"meh"}
    lines = D.imdb_jsonl(train, val, splits=["train", "val"]).decode().splitlines()
    assert lines == [
        '{"id": "train/neg/1_3.txt", "text": "meh", "label": 0, "label_text": "neg", "rating": 3, "src_dir": "val"}',
        '{"id": "train/neg/2_1.txt", "text": "bad \u00e9<br />", "label": 0, "label_text": "neg", "rating": 1, "src_dir": "train"}',
        '{"id": "train/pos/10_9.txt", "text": "good", "label": 1, "label_text": "pos", "rating": 9, "src_dir": "train"}',
    ]


def test_labelled_lines():
    folder = {"b.txt": b'say "hi"\nplain\n', "a.txt": b"one\n", "sub/c.txt": b"skipped\n", "notes.md": b"no"}
    assert D.labelled_lines(folder) == b'label\ttext\na\tone\nb\t"say ""hi"""\nb\tplain\n'


def test_newsgroup_subjects():
    train = {"sci.space/10": b"From: a\nSubject: Re: orbit  \n\nbody\nSubject: not this\n",
             "sci.space/9": b"Subject:Mars\n", "alt.atheism/5": "Subject: caf\xe9\n".encode("latin-1"),
             "sci.space/.DS_Store": b"\0"}
    test = {"alt.atheism/7": b"From: b\n\nno subject line\n"}
    assert D.newsgroup_subjects(train, test) == (
        "split\tlabel\tdoc_id\tsubject\ntrain\talt.atheism\t5\tcaf\u00e9\ntrain\tsci.space\t9\tMars\n"
        "train\tsci.space\t10\tRe: orbit\ntest\talt.atheism\t7\t\n").encode()


def test_sts_combined():
    inputs_a = b"s1\ts2\nt1\tt2\textra\tcols\nu1\tu2\n"
    gold_a = b"4.0\n\n 1.5\n"
    inputs_b, gold_b = b"v1\tv2\n", b"0\n"
    assert D.sts_combined(inputs_a, gold_a, inputs_b, gold_b, names=["A", "B"]) == (
        b"subset\tsentence1\tsentence2\tscore\nA\ts1\ts2\t4.0\nA\tu1\tu2\t1.5\nB\tv1\tv2\t0\n")
    with pytest.raises(ValueError, match="subset A: 3 input lines but 2 gold lines"):
        D.sts_combined(inputs_a, b"1\n2\n", names=["A"])


def test_biosses_pairs():
    assert D.biosses_pairs(b"a\nb\nc\nd\n", b"4\n2.2\n") == b"sentence1\tsentence2\tscore\na\tb\t4\nc\td\t2.2\n"
    with pytest.raises(ValueError, match="BIOSSES"):
        D.biosses_pairs(b"a\nb\nc\n", b"4\n2\n")


def test_sick_all():
    head = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    out = D.sick_all((head + "1\ta\tb\t4.5\tNEUTRAL\n").encode(), (head + "2\tc\td\t1\tCONTRADICTION\n").encode(),
                     (head + "3\te\tf\t3.3\tNEUTRAL\n\n").encode())
    assert out.decode() == (head.rstrip("\n") + "\tSemEval_set\n" + "1\ta\tb\t4.5\tNEUTRAL\tTRAIN\n"
                            "2\tc\td\t1\tCONTRADICTION\tTRIAL\n3\te\tf\t3.3\tNEUTRAL\tTEST\n")


def test_html_to_text():
    page = (b"<html><head><style>\r\n p {font-family:x}\r\n</style><title>Licence</title></head>\r\n<body>\r\n\r\n"
            b"<p>Some &quot;terms&quot;\r\nhere.&nbsp; </p>\r\n\r\n<p>&nbsp;</p>\r\n\r\n<p>&copy; Them</p>\r\n</body></html>")
    assert D.html_to_text(page, "ascii") == "Licence\n\nSome \"terms\"\nhere.\n\n\u00a9 Them\n".encode()


def test_arguana_corpus():
    folder = {
        "test/sport/house-would-ban-boxing/pro/pro01a-point.txt": b"Point\n\nBody line\n",
        "test/sport/house-would-ban-boxing/con/con01b-counter.txt": b"Counter\n",
        "test/sport/house-would-ban-boxing/full.txt": b"ignored",
        "training/sport/other-debate-0/pro/pro01a-point.txt": b"Counter\n",  # a test text again: dropped
        "training/sport/other-debate-0/pro/pro01b-counter.txt": b"New\n",
        "validation/art/x-y/con/con02a-point.txt": b"Val",
    }
    docs = [json.loads(line) for line in D.arguana_corpus(folder, splits=["test", "validation", "training"]).splitlines()]
    assert docs == [
        {"_id": "test-sport-hwbb-con01b", "title": "house would ban boxing", "text": "Counter", "metadata": {}},
        {"_id": "test-sport-hwbb-pro01a", "title": "house would ban boxing", "text": "Point  Body line", "metadata": {}},
        {"_id": "validation-art-xy-con02a", "title": "", "text": "Val", "metadata": {}},
        {"_id": "training-sport-od0-pro01b", "title": "", "text": "New", "metadata": {}},
    ]


def _csv(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # the real inputs are members of a zip: read them back the same way
        z.writestr("f.csv", text)
    return zipfile.ZipFile(buf).read("f.csv")


def test_scifact_corpus():
    corpus = _csv("doc_id,title,abstract,structured\n"
                  "4,T\u00e9,\"['One. ' \"\"Two's\"\"\n 'Three']\",False\n5,U,\"['Only']\",False\n")
    assert D.scifact_corpus(corpus) == (
        b'{"_id": "4", "title": "T\\u00e9", "text": "One. Two\'s Three", "metadata": {}}\n'
        b'{"_id": "5", "title": "U", "text": "Only", "metadata": {}}\n')


CLAIMS = ("id,claim,evidence_doc_id,evidence_label,evidence_sentences,cited_doc_ids\n"
          "0,First claim,,,[],[31715818]\n"
          "3,Second,200,SUPPORT,[1],[ 5956380 4414547]\n"
          "3,Second,4414547,SUPPORT,[2],[ 5956380 4414547]\n")


def test_scifact_queries():
    assert D.scifact_queries(_csv(CLAIMS)) == (b'{"_id": "0", "text": "First claim", "metadata": {}}\n'
                                                b'{"_id": "3", "text": "Second", "metadata": {}}\n')


def test_scifact_qrels():
    assert D.scifact_qrels(_csv(CLAIMS)) == b"query-id\tcorpus-id\tscore\n0\t31715818\t1\n3\t4414547\t1\n3\t5956380\t1\n"
