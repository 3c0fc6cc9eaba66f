"""run.py intervene: trained runs re-scored with their W zeroed, shuffled or taken from another seed."""
import json

import numpy as np
import pytest
import torch

import eval as evaluators
import run
from eval.interventions import next_seed
from mltp.cli.intervene import FanOut, derangement, initial_table
from mltp.embedder import Embedder
from mltp.pooling import load_pooler

TINY = ["--steps", "3", "--batch-size", "4", "--max-length", "64", "--suite", "quick", "--device", "cpu",
        "--tasks", "BIOSSES,Banking77", "--latents", "4"]


@pytest.fixture(scope="module")
def study(fixtures_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    tiny = str(fixtures_dir / "tiny")
    run.main(["ablation", "--model", tiny, "--only", "M3-mltp,A1-mltp-noW", "--seeds", "2", *TINY, "--out", str(out)])
    run.main(["intervene", "--device", "cpu", "--out", str(out)])  # each run's own suite and tasks
    return out


def test_every_w_run_gets_its_variants_and_no_w_run_any(study):
    for seed, other in ((0, 1), (1, 0)):
        record = json.loads((study / "M3-mltp" / f"seed-{seed}" / "interventions.json").read_text())
        assert list(record["variants"]) == ["trained", "zero", "shuffled", "reset", "other-seed"]
        assert record["donor_seed"] == other
        own = json.loads((study / "M3-mltp" / f"seed-{seed}" / "results.json").read_text())
        # The run itself, re-scored; scores lie in [-1, 1], so an absolute 1e-6 is relative to their range.
        for task, r in record["variants"]["trained"]["tasks"].items():
            assert r["main_score"] == pytest.approx(own["tasks"][task]["main_score"], abs=1e-6)
            assert r["per_item"]["kind"] == own["tasks"][task]["per_item"]["kind"]
        assert record["variants"]["zero"]["family_averages"] != record["variants"]["trained"]["family_averages"]
    assert not list((study / "A1-mltp-noW").glob("seed-*/interventions.json"))


def test_the_zero_variant_is_the_run_with_w_set_to_zero(study, data_dir):
    # Rebuilt by hand, one pooler, its own forward: the fan-out must give the same scores.
    run_dir = study / "M3-mltp" / "seed-0"
    embedder = Embedder.load(run_dir / "final")
    with torch.no_grad():
        embedder.pooler.layer_weights.zero_()
    expected = evaluators.evaluate(embedder, ["BIOSSES", "Banking77"], data_dir=data_dir, suite="quick", log=lambda m: None)
    record = json.loads((run_dir / "interventions.json").read_text())
    for task, r in expected.items():
        assert record["variants"]["zero"]["tasks"][task]["main_score"] == pytest.approx(r["main_score"], abs=1e-6)


def test_fan_out_is_each_pooler_on_the_same_states(study):
    embedder = Embedder.load(study / "M3-mltp" / "seed-0" / "final")
    other = Embedder.load(study / "M3-mltp" / "seed-1" / "final")
    fan = Embedder(embedder.model, embedder.tokenizer, FanOut([embedder.pooler, other.pooler]), embedder.config)
    texts = ["a short text", "a somewhat longer text with more tokens in it", "x"]
    both = fan.encode(texts)  # (N, 2D)
    D = embedder.model.config.hidden_size
    # Unit vectors: an absolute bound is relative to their norm of 1; 1e-5 is ~80 float32 ulps.
    torch.testing.assert_close(both[:, :D], embedder.encode(texts), atol=1e-5, rtol=0)
    second = Embedder(embedder.model, embedder.tokenizer, other.pooler, embedder.config).encode(texts)
    torch.testing.assert_close(both[:, D:], second, atol=1e-5, rtol=0)


def test_derangement_moves_every_row():
    for n in (2, 3, 4, 30):
        order = derangement(n, seed=0)
        assert sorted(order) == list(range(n)) and all(i != j for i, j in enumerate(order))
    assert derangement(5, 0) == derangement(5, 0)
    assert not np.array_equal(derangement(30, 0), derangement(30, 1))


def test_intervene_needs_a_study_directory(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run.main(["intervene", "--out", str(tmp_path / "nowhere")])
    assert "no study directory" in capsys.readouterr().err


def test_reset_is_the_w_an_untrained_run_of_that_seed_starts_from(study, fixtures_dir, tmp_path):
    # The job's own path to an untrained pooler: --eval-only builds it under the seed and saves it.
    run.main(["--model", str(fixtures_dir / "tiny"), "--pool", "mltp", "--eval-only", *TINY, "--out", str(tmp_path)])
    untrained = load_pooler(tmp_path / "final").layer_weights
    run_dir = study / "M3-mltp" / "seed-0"
    record = json.loads((run_dir / "results.json").read_text())
    trained = load_pooler(run_dir / "final")
    torch.testing.assert_close(initial_table(run_dir, trained, record), untrained.detach(), rtol=0, atol=0)
    assert not torch.equal(trained.layer_weights.detach(), untrained.detach())  # training moved it
    record["train"]["layer_table"]["norm_start"] *= 1.01  # another draw than the one trained
    with pytest.raises(ValueError, match="not rebuilt as it was trained"):
        initial_table(run_dir, trained, record)


def test_the_donor_rotates_so_no_seed_donates_twice():
    seeds = list(range(8))
    donors = [next_seed(s, seeds) for s in seeds]
    assert donors == [1, 2, 3, 4, 5, 6, 7, 0] and sorted(donors) == seeds
    assert [next_seed(s, [0, 2, 5]) for s in (0, 2, 5)] == [2, 5, 0]
    assert next_seed(3, [3]) is None


def test_nothing_to_intervene_on_is_an_error_that_says_what_was_found(tmp_path, capsys):
    # Before any slow step and without the data: a folder with no runs, --only naming none, or
    # runs none of which has a W is a one-line error, never a silent exit 0.
    def refused(*argv):
        with pytest.raises(SystemExit) as e:
            run.main(["intervene", "--out", str(tmp_path), "--device", "cpu", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2, err
        return err

    assert "no finished run of the study's configurations (CONFIG/seed-N/results.json) there" in refused()
    (tmp_path / "A1-mltp-noW" / "seed-0").mkdir(parents=True)
    (tmp_path / "A1-mltp-noW" / "seed-0" / "results.json").write_text(
        json.dumps({"config": {"pool": "mltp", "no_layer_weights": True}}))
    assert "1 finished run(s), none with a layer table W" in refused()
    assert "--only M3-mltp: no finished run (seed-N/results.json) under" in refused("--only", "M3-mltp")
