"""--train-data: strict reading, decontamination, weights, instructions, and the run's record."""
import hashlib
import json

import pytest

import run
from mltp.data.mixture import contamination_key, instruction_for, is_symmetric, row_instruction
from mltp.data.sources import Pair
from mltp.data.userdata import check_files, join_user_data, parse_spec, read_rows


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def rows(n, **extra):
    return [{"query": f"question number {i}", "positive": f"answer number {i}", **extra} for i in range(n)]


def test_parse_spec(tmp_path):
    assert parse_spec("a.jsonl") == (parse_spec("a.jsonl:1")[0], 1.0)
    assert parse_spec("dir/a.jsonl:2.5")[1] == 2.5
    assert str(parse_spec("odd:name.jsonl")[0]) == "odd:name.jsonl"  # not a number: part of the name
    for bad in ("a.jsonl:0", "a.jsonl:-1", "a.jsonl:nan", "a.jsonl:inf"):
        with pytest.raises(ValueError, match="positive finite"):
            parse_spec(bad)


@pytest.mark.parametrize("line, message", [
    ("not json", "line 2: not valid JSON"),
    ('["query"]', "line 2: expected a JSON object"),
    ('{"positive": "p"}', "line 2: field 'query' is missing"),
    ('{"query": "q"}', "line 2: field 'positive' is missing"),
    ('{"query": "  ", "positive": "p"}', "line 2: field 'query' must be a non-empty string"),
    ('{"query": "q", "positive": 3}', "line 2: field 'positive' must be a non-empty string"),
    ('{"query": "q", "positive": "p", "negatives": "n"}', "line 2: field 'negatives' must be a list"),
    ('{"query": "q", "positive": "p", "negatives": ["n", ""]}', "line 2: field 'negatives' item 1"),
    ('{"query": "q", "positive": "p", "instruction": 5}', "line 2: field 'instruction' must be a string"),
    ('{"query": "q", "positive": "p", "negative": "n"}', "line 2: unknown field(s) ['negative']"),
    ("", "line 2: not valid JSON"),  # a blank line is not skipped
])
def test_a_bad_line_names_file_line_and_field(tmp_path, line, message):
    path = write_jsonl(tmp_path / "mine.jsonl", [rows(1)[0], line, rows(1)[0]])
    with pytest.raises(ValueError) as e:
        read_rows(path)
    assert "mine.jsonl" in str(e.value) and message in str(e.value)


def test_empty_or_missing_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl: the file is empty"):
        check_files([str(tmp_path / "empty.jsonl")])
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        check_files([str(tmp_path / "nope.jsonl")])


def test_decontamination_weights_negatives_and_instructions(tmp_path):
    data = rows(10)
    data[0]["query"] = "An Evaluation  TEXT"  # matches after case/space folding
    data[1]["negatives"] = ["x", "an evaluation text"]  # a negative alone is enough to drop the row
    data[2]["negatives"] = ["neg a", "neg b", "neg c"]
    data[3]["instruction"] = "Find the answer"
    path = write_jsonl(tmp_path / "mine.jsonl", data)
    builtin = [Pair("b q", "b p", None, "mrpc")]
    files = check_files([f"{path}:2"])
    assert files[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and files[0]["rows"] == 10
    out, dropped, record = join_user_data(builtin, {"mrpc": 3}, files, seed=0, exclude_texts={"an evaluation text"})
    assert dropped == {"mrpc": 3, "file:mine.jsonl": 2}
    own = [p for p in out if p.source == "file:mine.jsonl"]
    assert len(own) == 16 and len(out) == 17  # 8 clean rows, twice
    assert record[0]["dropped"] == 2 and record[0]["pairs"] == 16 and record[0]["weight"] == 2.0
    assert {p.negative for p in own if p.query == "question number 2"} <= {"neg a", "neg b", "neg c"}
    by_query = {p.query: p for p in own}
    assert row_instruction(by_query["question number 3"]) == "Find the answer"
    assert row_instruction(by_query["question number 4"]) == ""  # no instruction: the query goes plain
    assert row_instruction(builtin[0]) == instruction_for("mrpc")  # built-in rows: their source's
    assert not is_symmetric("file:mine.jsonl") and is_symmetric("mrpc")
    half, _, _ = join_user_data([], {}, check_files([f"{path}:0.5"]), seed=0, exclude_texts=set())
    assert len(half) == 5 and len({p.query for p in half}) == 5
    again, _, _ = join_user_data([], {}, check_files([f"{path}:0.5"]), seed=0, exclude_texts=set())
    assert [p.query for p in again] == [p.query for p in half]  # seeded


def test_own_data_is_decontaminated_by_the_built_in_mixtures_key(tmp_path):
    # An STSBenchmark-like test sentence copied without its period, in capitals, or with other
    # punctuation is the same text to a model: the key is mltp.data.mixture's, letters and digits.
    evaluation = "A man is playing a flute."
    data = rows(6)
    data[0]["query"] = "A man is playing a flute"  # no period
    data[1]["positive"] = "A MAN IS PLAYING A FLUTE."
    data[2]["negatives"] = ["a man, is playing a flute!"]
    path = write_jsonl(tmp_path / "mine.jsonl", data)
    out, dropped, _ = join_user_data([], {}, check_files([str(path)]), seed=0, exclude_texts={evaluation})
    assert dropped == {"file:mine.jsonl": 3} and len(out) == 3
    assert {contamination_key(t) for p in out for t in (p.query, p.positive)}.isdisjoint({contamination_key(evaluation)})


def rows_of_mrpc():
    return [Pair("b q", "b p", None, "mrpc")]


def test_a_file_of_one_repeated_row_is_refused(tmp_path):
    # 50 identical rows: each is a false negative of every other (masked), so every batch of them
    # has a loss of 0 and nothing to learn; the run would end with exit 0 having learnt nothing.
    path = write_jsonl(tmp_path / "same.jsonl", [{"query": "q", "positive": "the one answer"}] * 50)
    with pytest.raises(ValueError, match=r"same.jsonl: every row has the same positive text and no other candidate"):
        join_user_data([], {}, check_files([str(path)]), seed=0, exclude_texts=set())
    two = write_jsonl(tmp_path / "two.jsonl", [{"query": "q", "positive": "the one answer"}] * 49 +
                      [{"query": "r", "positive": "another answer"}])
    assert len(join_user_data([], {}, check_files([str(two)]), seed=0, exclude_texts=set())[0]) == 50
    # beside other rows, the repeated one has negatives
    assert len(join_user_data(rows_of_mrpc(), {}, check_files([str(path)]), seed=0, exclude_texts=set())[0]) == 51


def test_a_non_utf8_line_and_a_weight_that_keeps_no_row_are_named(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(rows(1)[0]).encode() + b"\n" + '{"query": "caf\u00e9", "positive": "p"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.jsonl line 2: not UTF-8 text \(byte 0xe9 at column 15\)"):
        check_files([str(path)])
    ten = write_jsonl(tmp_path / "ten.jsonl", rows(10))
    with pytest.raises(ValueError, match=r"ten.jsonl:0.01: weight 0.01 of its 10 row\(s\) rounds to none; give a weight of at least 0.1"):
        check_files([f"{ten}:0.01"])
    assert len(join_user_data(rows_of_mrpc(), {}, check_files([f"{ten}:0.1"]), seed=0, exclude_texts=set())[0]) == 2


def test_a_file_changed_after_the_check_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", rows(4))
    files = check_files([str(path)])
    write_jsonl(path, rows(5))
    with pytest.raises(ValueError, match="changed since it was checked"):
        join_user_data([], {}, files, seed=0, exclude_texts=set())


def test_run_replaces_the_mixture_and_records_the_files(fixtures_dir, data_dir, tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", rows(12, negatives=["some other text"]))
    out = tmp_path / "run"
    run.main(["--model", str(fixtures_dir / "tiny"), "--steps", "2", "--batch-size", "4", "--max-length", "32",
              "--device", "cpu", "--tasks", "BIOSSES", "--pool", "eos",
              "--train-data", f"{path}:1.5", "--train-data-mode", "replace", "--out", str(out)])
    record = json.loads((out / "results.json").read_text())
    mixture = record["mixture"]
    assert mixture["rows"] == 18 and mixture["train_data_mode"] == "replace"
    (file,) = mixture["train_data"]
    assert file["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and file["path"] == str(path.resolve())
    assert (file["rows"], file["pairs"], file["dropped"], file["weight"]) == (12, 18, 0, 1.5)
    assert "file:mine.jsonl" in (out / "log.txt").read_text()


def test_cli_names_the_bad_line(fixtures_dir, tmp_path, capsys):
    path = write_jsonl(tmp_path / "mine.jsonl", [rows(1)[0], '{"query": "q"}'])
    with pytest.raises(SystemExit) as e:
        run.main(["--model", str(fixtures_dir / "tiny"), "--train-data", str(path), "--device", "cpu"])
    assert e.value.code == 2 and "mine.jsonl line 2: field 'positive' is missing" in capsys.readouterr().err
