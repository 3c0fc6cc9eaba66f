"""run.py: every flag parses, bad input fails fast, and the whole pipeline writes what it promises."""
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import run
from mltp import cli
from mltp.cli.settings import config_name


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # migrate_results


def parse(argv):
    return cli.parse(argv)[0]

TINY_EVAL = ["--suite", "quick", "--device", "cpu", "--tasks", "BIOSSES,ArguAna,Banking77,TwentyNewsgroups"]
TINY_RUN = ["--steps", "3", "--batch-size", "4", "--max-length", "96", "--latents", "4", *TINY_EVAL]


@pytest.fixture
def tiny(fixtures_dir):
    return str(fixtures_dir / "tiny")


def average_ranks(x: np.ndarray) -> np.ndarray:
    # 1-based ranks, ties sharing the mean of the ranks they span
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def score_from_items(per_item: dict) -> float:
    """A task's main score recomputed from its per-item record, independently of eval/."""
    if per_item["kind"] == "mean":  # retrieval nDCG@10 per query, accuracy per item, V-measure per set
        return float(np.mean(per_item["values"]))
    assert per_item["kind"] == "spearman", per_item["kind"]
    pred, gold = average_ranks(np.array(per_item["pred"])), average_ranks(np.array(per_item["gold"]))
    return float(np.corrcoef(pred, gold)[0, 1])  # Spearman = Pearson of the ranks


def test_every_documented_flag_parses():
    args = parse([
        "--model", "m", "--pool", "trainable", "--attn", "bidirectional", "--layers", "last4", "--no-layer-weights",
        "--layer-token", "mean", "--tokens", "all", "--latents", "64", "--heads", "4", "--head-dim", "32",
        "--steps", "5", "--batch-size", "8", "--grad-accum", "2", "--lr", "1e-4", "--max-length", "128",
        "--lora-r", "8", "--lora-alpha", "16", "--seed", "3", "--include-classification-train",
        "--gradient-checkpointing", "--eval-only", "--suite", "full", "--tasks", "STS12", "--device", "cpu",
        "--dtype", "bfloat16", "--compile", "--data-dir", "/d", "--out", "/o",
    ])
    assert (args.command, args.pool, args.attn, args.layers, args.no_layer_weights) == ("train", "trainable", "bidirectional", "last4", True)
    assert (args.steps, args.batch_size, args.grad_accum, args.lr, args.lora_r, args.seed) == (5, 8, 2, 1e-4, 8, 3)
    assert args.eval_only and args.compile and args.gradient_checkpointing and args.include_classification_train
    assert parse(["ablation", "--seeds", "2", "--only", "M1-eos"]).command == "ablation"
    assert args.compile == "default" and parse(["--compile", "reduce-overhead"]).compile == "reduce-overhead"
    sweep = parse(["ablation", "--time-limit", "7.5", "--report-only"])
    assert sweep.time_limit == 7.5 and sweep.report_only and parse(["ablation", "--no-report"]).no_report
    assert parse(["probe", "--every", "5"]).every == 5
    assert parse(["probe", "--pooler", "runs/x/final"]).pooler == "runs/x/final"
    assert parse(["--joint-forward"]).joint_forward is True and parse(["--no-joint-forward"]).joint_forward is False
    assert parse([]).joint_forward is None  # resolved by hardware: on a GPU, on a CPU not


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pool", "max"], "invalid choice: 'max'"),
        (["--layers", "last40"], "last40"),
        (["--layers", "middle2,3"], "middle2,3"),
        (["--pool", "eos", "--no-layer-weights"], "--no-layer-weights does not apply to --pool eos"),
        (["--no-layer-weights", "--layer-weight-std", "8"], "--layer-weight-std does not apply to --pool mltp without layer weights"),
        (["--pool", "eos", "--block", "40"], "--block=40: a block number 1..6"),
        (["--tasks", "NoSuchTask"], "unknown task"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_bad_input_fails_fast_with_a_clear_message(tiny, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--model", tiny, *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_and_model_directories_are_named(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run.main(["--model", tiny, "--data-dir", str(tmp_path / "nowhere")])
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run.main(["--model", str(tmp_path)])
    assert "no config.json" in capsys.readouterr().err


def test_main_job_writes_a_complete_run_directory(tiny, data_dir, tmp_path):
    out = tmp_path / "run"
    run.main(["--model", tiny, "--pool", "mltp", "--layers", "middle4", "--no-layer-weights", *TINY_RUN, "--out", str(out)])
    for name in ("config.json", "log.txt", "results.json", "final/adapter_model.safetensors", "final/adapter_config.json",
                 "final/pooler.safetensors", "final/pooler_config.json", "final/embedder.json", "train_history.jsonl"):
        assert (out / name).exists(), name
    record = json.loads((out / "results.json").read_text())
    assert record["name"] == "mltp-causal-middle4-noW"
    assert set(record["family_averages"]) == {"sts", "retrieval", "classification", "clustering"}
    assert record["train"]["steps_run"] == 3 and record["mixture"]["rows"] > 1000
    assert record["environment"]["git_revision"] and record["config"]["layer_ids"] == [2, 3, 4, 5]
    for name, task in record["tasks"].items():
        assert task["n_items"] > 0
        assert task["main_score"] == pytest.approx(score_from_items(task["per_item"]), abs=1e-9), name
    log = (out / "log.txt").read_text()
    assert "layers: middle4 -> 4 of 6 blocks: 2-5" in log and "training mixture" in log and "layer weights: OFF" in log
    assert "separate forwards per step" in log and record["config"]["joint_forward"] is False  # the CPU default
    assert "LoRA adapter merged into the base weights for evaluation" in log


def test_sweep_resumes_and_skips_finished_configurations(tiny, data_dir, tmp_path, capsys):
    argv = ["ablation", "--model", tiny, "--only", "M3-mltp,A1-mltp-noW", "--seeds", "1", *TINY_RUN, "--out", str(tmp_path)]
    # A time limit far below one run's length: the first run still starts, the second does not.
    run.main(argv + ["--time-limit", "0.0001", "--no-report"])
    printed = capsys.readouterr().out
    assert "[stop] time limit" in printed and "go on from A1-mltp-noW seed 0" in printed
    assert not (tmp_path / "A1-mltp-noW").exists() and not (tmp_path / "report.md").exists()  # --no-report
    first = (tmp_path / "M3-mltp" / "seed-0" / "results.json").stat().st_mtime_ns

    run.main(argv)  # goes on where the limit stopped it
    printed = capsys.readouterr().out
    assert "[skip] M3-mltp seed 0" in printed and (tmp_path / "A1-mltp-noW" / "seed-0" / "results.json").exists()
    report = (tmp_path / "report.md").read_text()
    assert "| layer weights: on vs off, all blocks (M3-mltp vs A1-mltp-noW) | sts |" in report
    assert "- layer weights: on vs off, all blocks (M3-mltp vs A1-mltp-noW), clustering: **" in report  # the reading
    verdicts = json.loads((tmp_path / "report.json").read_text())["verdicts"]
    assert {v["family"] for v in verdicts} == {"sts", "retrieval", "classification", "clustering"}
    # Both commands that produced runs are listed, the first one with its time limit.
    assert f"`python run.py {' '.join(argv + ['--time-limit', '0.0001', '--no-report'])}`; `python run.py {' '.join(argv)}`" in report
    assert (tmp_path / "chart.svg").exists()
    assert json.loads((tmp_path / "report.json").read_text())["comparisons"][0]["wilcoxon"]["n"] >= 0

    run.main(argv)
    printed = capsys.readouterr().out
    assert "[skip] M3-mltp seed 0" in printed and "[skip] A1-mltp-noW seed 0" in printed
    assert (tmp_path / "M3-mltp" / "seed-0" / "results.json").stat().st_mtime_ns == first

    # Going on with other settings would mix budgets in one report: refused before any work.
    other = [a if a != "3" else "4" for a in argv]  # --steps 3 -> 4
    with pytest.raises(SystemExit):
        run.main(other)
    assert "M3-mltp/seed-0 holds a finished run made with other settings (steps: finished 3, asked 4;" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one forward per step draws other dropout masks than three
        run.main(argv + ["--joint-forward"])
    assert "(joint_forward: finished False, asked True;" in capsys.readouterr().err
    # A record missing a setting is not taken as matching: it names the setting.
    finished = tmp_path / "M3-mltp" / "seed-0" / "results.json"
    record = json.loads(finished.read_text())
    del record["settings"]["joint_forward"]
    finished.write_text(json.dumps(record))
    with pytest.raises(SystemExit):
        run.main(argv)
    assert "(joint_forward: finished None, asked False;" in capsys.readouterr().err
    record["settings"]["joint_forward"] = False
    finished.write_text(json.dumps(record))

    # A finished run made by an earlier version: no settings record (its settings were read out of
    # the flags it recorded), and none of the flags added since. Refused, naming the upgrade;
    # upgraded once by scripts/migrate_results.py, it is skipped as finished again.
    made_before = {k: v for k, v in record["config"].items() if k not in ("layer_weight_std", "mini_batch", "train_data")}
    aged = {k: v for k, v in record.items() if k != "settings"} | {"config": made_before}
    finished.write_text(json.dumps(aged, indent=2) + "\n")
    (finished.parent / "config.json").write_text(json.dumps(made_before, indent=2) + "\n")
    with pytest.raises(SystemExit):
        run.main(argv)
    assert "holds no settings record" in capsys.readouterr().err
    migrate = importlib.import_module("migrate_results")
    assert migrate.migrate(tmp_path, log=lambda m: None) == 2 and migrate.migrate(tmp_path, log=lambda m: None) == 0
    upgraded = json.loads(finished.read_text())
    assert upgraded["settings"] == record["settings"] and upgraded["tasks"] == record["tasks"]
    assert json.loads((finished.parent / "config.json").read_text()) == {"settings": record["settings"], "config": made_before}
    run.main(argv + ["--no-report"])
    assert "[skip] M3-mltp seed 0" in capsys.readouterr().out

    # A run from another session: other code, another forward mode.
    older = tmp_path / "A1-mltp-noW" / "seed-0" / "results.json"
    record = json.loads(older.read_text())
    record["environment"]["git_revision"] = "feedbeef" * 5
    record["config"]["joint_forward"] = True  # as a GPU session's run would be
    older.write_text(json.dumps(record))
    (tmp_path / "report.md").unlink()
    run.main(["ablation", "--report-only", "--out", str(tmp_path)])  # no model, data or device needed
    assert "study:" not in capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    assert "| layer weights: on vs off, all blocks (M3-mltp vs A1-mltp-noW) | sts |" in report
    assert "feedbeeffeed" in report and "Code: " in report and report.count(", ", report.index("Code: "), report.index(". Runs")) >= 1
    assert f"`python run.py {' '.join(argv)}`" in report
    assert "joint forward (1 run), separate forwards (1 run) per step" in report


def test_pooler_probe_reports_attention_per_block_and_family(tiny, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run.main(["--model", tiny, "--pool", "mltp", "--layers", "2,4,6", *TINY_RUN, "--out", str(out)])
    trained = json.loads((out / "results.json").read_text())
    probe = tmp_path / "probe"
    run.main(["probe", "--model", tiny, "--pooler", str(out / "final"), *TINY_EVAL, "--out", str(probe)])
    record = json.loads((probe / "pooler_attention.json").read_text())
    assert record["layers"] == [2, 4, 6] and set(record["families"]) == {"sts", "retrieval", "classification", "clustering"}
    for shares in [*record["families"].values(), *(t["shares"] for t in record["tasks"].values())]:
        assert len(shares) == 3 and abs(sum(shares) - 1) < 1e-5 and min(shares) > 0  # a softmax over 3 blocks
    assert len(record["layer_weight_norms"]) == 3 and min(record["layer_weight_norms"]) > 0
    # The probe re-evaluates the saved embedder: the same scores as the run that trained it (scores
    # lie in [-1, 1], so an absolute 1e-6 is relative to their range).
    for name, task in record["tasks"].items():
        assert abs(task["main_score"] - trained["tasks"][name]["main_score"]) < 1e-6, name
    assert (probe / "pooler_attention.svg").read_text().startswith("<svg")
    assert "most attended blocks" in (probe / "log.txt").read_text()
    with pytest.raises(SystemExit):
        run.main(["probe", "--model", tiny, "--pooler", str(tmp_path), *TINY_EVAL])
    assert "no embedder.json there" in capsys.readouterr().err


def test_probe_writes_per_block_scores_and_chart(tiny, data_dir, tmp_path):
    run.main(["probe", "--model", tiny, "--tasks", "BIOSSES", "--suite", "quick", "--every", "3", "--device", "cpu", "--out", str(tmp_path)])
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert set(probe["layers"]) == {"eos", "mean"} and set(probe["layers"]["eos"]) == {"3", "6"}
    assert (tmp_path / "probe.svg").read_text().startswith("<svg")


def test_a_configuration_that_names_its_token_keeps_it(tiny, data_dir, tmp_path):
    # A3 is M3 with M5's per-block mean: the sweep must not reset it to the causal default (EOS).
    run.main(["ablation", "--model", tiny, "--only", "A3-mltp-mean", "--seeds", "1", *TINY_RUN, "--out", str(tmp_path)])
    record = json.loads((tmp_path / "A3-mltp-mean" / "seed-0" / "results.json").read_text())
    assert record["config"]["layer_token"] == "mean" and record["config"]["attn"] == "causal"
    assert record["name"] == "mltp-causal-all-mean"  # not M3's name: a main-job run directory of its own
    assert config_name(parse(["--pool", "mltp"])) == "mltp-causal-all"


def test_a_run_made_from_another_checkout_reproduces_from_this_one():
    from pathlib import Path

    from mltp.cli.ablation import same_out
    out = Path("results/cpu-study2")
    elsewhere = "python run.py ablation --seeds 1 --out /elsewhere/results/cpu-study2 --only M3-mltp"
    assert same_out(elsewhere, out) == "python run.py ablation --seeds 1 --out results/cpu-study2 --only M3-mltp"
    other = "python run.py ablation --out runs/other"  # another folder is left as it was
    assert same_out(other, out) == other
