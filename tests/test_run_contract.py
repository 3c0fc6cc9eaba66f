"""A run directory is a contract: same settings or an error, a whole record after any kill, valid
output or an error, verified data, and every input checked before the slow work."""
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mltp.cli.job as job
import run
from eval.files import TASK_FILES
from eval.manifest import Entry, render_markdown
from eval.tasks import TASKS
from mltp.data import manifest
from mltp.formats.checkpoint import load_model
from mltp.hygiene.interrupt import TrainingInterrupted
from mltp.hygiene.runlock import RunLocked, hold
from mltp.cli.flags import unused_flags
from mltp.hygiene.identity import SettingsMismatch, check_run_dir
from mltp.pooling import PoolerConfig
from mltp.hygiene.strict_json import finite_or_null
from mltp.train import CheckpointError, TrainConfig, train, train_settings

from test_run import TINY_RUN
from test_train import CFG, make_embedder, make_rows

ROOT = Path(__file__).resolve().parents[1]
# The tiny run with one quick task: these tests are about the run directory, not the scores.
RUN = [*TINY_RUN[:TINY_RUN.index("--tasks")], "--tasks", "BIOSSES", *TINY_RUN[TINY_RUN.index("--tasks") + 2:]]


@pytest.fixture(autouse=True)
def private_verdicts(tmp_path, monkeypatch):
    # The data check's verdict cache, per test: a test must not pass on another's verdict.
    monkeypatch.setattr(manifest, "default_cache", lambda: tmp_path / "data-verdicts.json")


@pytest.fixture
def tiny(fixtures_dir):
    return str(fixtures_dir / "tiny")


def strict_load(path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def scores(out):
    return {name: t["main_score"] for name, t in strict_load(out / "results.json")["tasks"].items()}


def history_steps(out):
    return [json.loads(line)["step"] for line in (out / "train_history.jsonl").read_text().splitlines()]


def stray(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*.tmp"))


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def reference(fixtures_dir, data_dir, tmp_path_factory):
    """One uninterrupted tiny run: what every interrupted or resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run.main(["--model", str(fixtures_dir / "tiny"), *RUN, "--out", str(out)])
    return out


# ---- a run's identity is its settings ---------------------------------------------------------------

def test_a_finished_run_is_resumed_only_under_its_settings(tiny, reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    base = ["--model", tiny, *RUN, "--out", str(out)]
    err = refused([*base, "--lr", "0.05"], capsys)
    assert "holds a finished run made with other settings (lr: finished 0.0003, asked 0.05" in err
    assert "pass another --out or delete" in err
    err = refused([*base[:-2], "--steps", "4", "--batch-size", "8", "--out", str(out)], capsys)
    assert "steps: finished 3, asked 4" in err and "batch_size: finished 4, asked 8" in err
    err = refused([*base, "--pool", "trainable"], capsys)  # once: "Unexpected key(s) in state_dict"
    assert "pool: finished 'mltp', asked 'trainable'" in err
    assert strict_load(out / "results.json") == strict_load(reference / "results.json")  # untouched

    # The same flags again: the training record is the run's, not this session's zero steps.
    capsys.readouterr()
    run.main(base)
    record = strict_load(out / "results.json")
    assert record["train"]["steps_run"] == 3 and record["train"]["steps_this_session"] == 0
    assert record["train"]["final_loss"] == strict_load(reference / "results.json")["train"]["final_loss"]
    assert history_steps(out) == [1, 2, 3] and scores(out) == scores(reference)


def test_an_unfinished_run_is_resumed_only_under_its_settings(tiny, data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    base = ["--model", tiny, *RUN, "--out", str(out)]
    interrupt_after(monkeypatch, 2)
    with pytest.raises(SystemExit) as exit_info:
        run.main(base)
    assert exit_info.value.code == 130
    monkeypatch.undo()
    assert (out / "checkpoints" / "step-000002").is_dir() and not (out / "results.json").exists()
    err = refused([*base, "--lr", "0.05"], capsys)
    assert "holds an unfinished run made with other settings (lr: checkpoint 0.0003, asked 0.05;" in err
    err = refused([*base, "--joint-forward"], capsys)
    assert "joint_forward: checkpoint False, asked True" in err
    trainer = out / "checkpoints" / "step-000002" / "trainer.pt"
    trainer.write_bytes(trainer.read_bytes()[:100])  # a damaged checkpoint is named, not a traceback
    err = refused(base, capsys)
    assert f"cannot resume from {trainer.parent}" in err and "pass another --out or delete" in err


def test_a_checkpoint_never_lends_its_optimiser_other_settings(fixtures_dir, tmp_path):
    # One check (mltp.hygiene.identity.check_run_dir) compares the settings a checkpoint recorded
    # with the ones asked, before any work; the command line makes it for every run directory.
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)
    train(emb, make_rows(), TrainConfig(**CFG), lora, tmp_path / "run", log=lambda m: None, stop_after=4,
          settings={"lr": CFG["lr"]})
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-000004" / "trainer_state.json").read_text())
    assert state["settings"] == {"lr": CFG["lr"]}
    assert check_run_dir(tmp_path / "run", {"lr": CFG["lr"]}) == "checkpoint"
    with pytest.raises(SettingsMismatch, match=r"other settings \(lr: checkpoint 0.003, asked 0.01; recorded in .*trainer_state"):
        check_run_dir(tmp_path / "run", {"lr": 1e-2})
    # Trained without a settings record of its own, a run records its TrainConfig: the learning
    # rate its optimiser state was made with is still compared.
    train(emb, make_rows(), TrainConfig(**CFG), lora, tmp_path / "bare", log=lambda m: None, stop_after=4)
    check_run_dir(tmp_path / "bare", train_settings(TrainConfig(**CFG)))
    with pytest.raises(SettingsMismatch, match=r"\(lr: checkpoint 0.003, asked 0.01;"):
        check_run_dir(tmp_path / "bare", train_settings(TrainConfig(**{**CFG, "lr": 1e-2})))


def test_the_sweep_refuses_a_killed_configuration_under_new_flags(tiny, data_dir, tmp_path, capsys, monkeypatch):
    argv = ["ablation", "--model", tiny, "--only", "M1-eos", "--seeds", "1", *RUN, "--out", str(tmp_path)]
    interrupt_after(monkeypatch, 1)
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 130
    assert f"To resume: python run.py {' '.join(argv)}" in capsys.readouterr().out
    monkeypatch.undo()
    err = refused([*argv, "--lr", "0.001"], capsys)
    assert "M1-eos/seed-0 holds an unfinished run made with other settings (lr: checkpoint 0.0003, asked 0.001;" in err


def test_flags_that_do_not_apply_are_refused_or_recorded_as_unused(tiny, reference, capsys):
    def unused(kind, **more):
        return unused_flags(PoolerConfig(kind=kind, hidden_size=64, num_layers=6, layer_token="eos", **more))

    assert unused("eos") == ["layers", "layer_token", "no_layer_weights", "layer_weight_std", "layer_weight_lr_mult",
                             "tokens", "latents", "heads", "head_dim"]
    assert unused("mltp") == ["block", "tokens"]
    assert unused("mltp", layer_weights=False) == ["block", "layer_weight_std", "layer_weight_lr_mult", "tokens"]
    assert unused("trainable") == ["layers", "layer_token", "no_layer_weights", "layer_weight_std", "layer_weight_lr_mult"]
    assert unused("scalar-mix") == ["block", "no_layer_weights", "layer_weight_std", "tokens", "latents", "heads", "head_dim"]
    err = refused(["--model", tiny, "--pool", "eos", "--layers", "2", "--layer-token", "mean"], capsys)
    assert "--layers, --layer-token do not apply to --pool eos" in err
    assert "--tokens does not apply to --pool mltp" in refused(["--model", tiny, "--tokens", "all"], capsys)
    # Left at their defaults they are recorded, and named as unused.
    record = strict_load(reference / "results.json")
    assert record["unused_settings"] == ["block", "tokens"] and record["config"]["tokens"] == "eos"


# ---- the record survives -----------------------------------------------------------------------------

KILLER = """
import os, pathlib, sys
sys.path.insert(0, {root!r})
import run
from mltp.hygiene import history

point, argv = sys.argv[1], sys.argv[2:]
real_replace, real_rename, real_append = os.replace, pathlib.Path.rename, history.History.append

def replace(src, dst):  # os.replace: the last move of every atomic write
    dst = pathlib.Path(dst)
    if (point == "results" and dst.name == "results.json") or (point == "final" and dst.parent.name == "final"):
        os._exit(137)
    real_replace(src, dst)

def rename(self, target):  # a checkpoint folder's move into place
    if point == "checkpoint":
        os._exit(137)
    return real_rename(self, target)

def append(self, row):  # half of step 2's line, then gone
    if point == "history" and row["step"] == 2:
        with open(self.path, "a") as f:
            f.write('{{"step": 2, "lo')
        os._exit(137)
    real_append(self, row)

os.replace, pathlib.Path.rename, history.History.append = replace, rename, append
run.main(argv)
"""


def test_a_kill_at_every_write_leaves_a_run_that_resumes_to_the_same_result(tiny, reference, tmp_path):
    out = tmp_path / "run"
    argv = ["--model", tiny, *RUN, "--out", str(out)]
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=str(ROOT)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLTP_CACHE": str(tmp_path / "cache")}
    left = {
        "history": lambda: (out / "train_history.jsonl").read_text().endswith('"lo'),
        "checkpoint": lambda: (out / "checkpoints" / ".step-000003.tmp").is_dir(),
        "final": lambda: any(p.name.endswith(".tmp") for p in (out / "final").iterdir()),
        "results": lambda: any(p.name.startswith(".results.json") for p in out.iterdir()),
    }
    for point, leftover in left.items():  # each kill goes on from what the previous one left
        done = subprocess.run([sys.executable, str(script), point, *argv], env=env, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 137, (point, done.stderr[-2000:])
        assert leftover(), point  # the kill really interrupted that write
        assert not (out / "results.json").exists()
    run.main(argv)
    assert stray(out) == [] and history_steps(out) == [1, 2, 3]
    assert scores(out) == scores(reference)  # bit-identical
    assert strict_load(out / "results.json")["train"]["steps_run"] == 3


def interrupt_after(monkeypatch, step, real_signal=None):
    """Ctrl-C once `step` steps are done: raised from the step callback, or sent as a real signal."""
    real_train = job.train

    def on_step(done):
        if done == step:
            if real_signal:
                os.kill(os.getpid(), real_signal)
            else:
                raise KeyboardInterrupt

    monkeypatch.setattr(job, "train", lambda *a, **k: real_train(*a, **k, on_step=on_step))


@pytest.mark.parametrize("real_signal", [None, signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_writes_a_checkpoint_and_prints_the_resume_command(tiny, reference, tmp_path, capsys, monkeypatch,
                                                                   real_signal):
    out = tmp_path / "run"
    argv = ["--model", tiny, *RUN, "--out", str(out)]
    interrupt_after(monkeypatch, 1, real_signal)
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 130
    printed = capsys.readouterr().out
    assert "interrupted after step 1 of 3" in printed and f"To resume: python run.py {' '.join(argv)}" in printed
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000001" and history_steps(out) == [1]
    monkeypatch.undo()
    run.main(argv)
    assert history_steps(out) == [1, 2, 3] and scores(out) == scores(reference)


@pytest.mark.parametrize("phase", ["training_mixture", "evaluate_run"])
def test_sigterm_outside_training_stops_as_ctrl_c_does(tiny, data_dir, tmp_path, capsys, monkeypatch, phase):
    # While the data is prepared or the run evaluated, SIGTERM is Ctrl-C: the run says how to
    # resume and exits 130, instead of dying with 143 and no word.
    def terminated(*args, **kwargs):
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler), f"SIGTERM during {phase} would kill the run without a word"
        handler(signal.SIGTERM, None)  # as the kernel would deliver it here

    monkeypatch.setattr(job, phase, terminated)
    argv = ["--model", tiny, *RUN, "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 130
    assert f"interrupted; what was done is kept. To resume: python run.py {' '.join(argv)}" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was


def test_train_saves_on_interrupt_at_a_step_boundary(fixtures_dir, tmp_path):
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)

    def stop(done):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as info:
        train(emb, make_rows(), TrainConfig(**CFG), lora, tmp_path, log=lambda m: None, on_step=stop)
    assert info.value.step == 3 and info.value.checkpoint.name == "step-000003"


def test_a_full_disk_is_named_not_a_torch_internal(fixtures_dir, tmp_path, monkeypatch):
    torch.manual_seed(0)
    emb, lora = make_embedder(fixtures_dir)

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 128 vs 64")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*step-000001.tmp/trainer.pt \(is the disk full\?\)"):
        train(emb, make_rows(), TrainConfig(**{**CFG, "save_every": 1}), lora, tmp_path, log=lambda m: None)
    assert stray(tmp_path) == []


# ---- valid output or an error ------------------------------------------------------------------------

def test_results_are_strict_json():
    record, nulls = finite_or_null({"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": torch.tensor(2.5)})
    assert record == {"a": [1.0, None], "b": {"c": None}, "d": 2.5} and nulls == ["a[1]: nan", "b.c: inf"]


def copy_model(tiny, tmp_path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    return model


def test_a_non_finite_score_is_an_error_naming_the_task(tiny, data_dir, tmp_path, capsys):
    model = copy_model(tiny, tmp_path)
    weights = load_file(model / "model.safetensors")
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], float("nan"))
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "run"
    err = refused(["--model", str(model), "--pool", "eos", "--eval-only", "--tasks", "BIOSSES", "--suite", "quick",
                   "--device", "cpu", "--out", str(out)], capsys)
    assert "task BIOSSES: STS inputs contain NaN or inf" in err and not (out / "results.json").exists()


def test_a_model_with_integer_weights_is_refused(tiny, tmp_path, capsys):
    model = copy_model(tiny, tmp_path)
    weights = load_file(model / "model.safetensors")
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"].to(torch.int32)
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="'model.embed_tokens.weight' in .*model.safetensors is torch.int32, not floating point"):
        load_model(model)
    err = refused(["--model", str(model), "--out", str(tmp_path / "run")], capsys)
    assert "'model.embed_tokens.weight' in" in err and "is I32, not floating point" in err
    assert not (tmp_path / "run").exists()


# ---- data verified against the manifest ---------------------------------------------------------------

def small_data_dir(tmp_path) -> Path:
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "rows.tsv").write_text("x\ty\n1\t2\n3\t4\n")
    with gzip.open(data / "a" / "big.tsv.gz", "wt") as f:
        f.write("line\n" * 1000)
    plain, big = (data / "a" / "rows.tsv").read_bytes(), b"line\n" * 1000
    import hashlib
    (data / "MANIFEST.md").write_text(
        "# Data manifest\n\n| family | file | rows | size (bytes) | sha256 | source |\n|---|---|---|---|---|---|\n"
        f"| t | a/rows.tsv | 2 | {len(plain)} | {hashlib.sha256(plain).hexdigest()} | here |\n"
        f"| t | a/big.tsv.gz | 1000 | {len(big)} | {hashlib.sha256(big).hexdigest()} | here |\n\n"
        "## Other\n\n| family | file | rows |\n|---|---|---|\n| t | a/free.txt | 1 |\n")
    (data / "a" / "free.txt").write_text("no checksum listed\n")
    return data


def test_data_files_are_checked_against_the_manifest(tmp_path, monkeypatch):
    data, cache = small_data_dir(tmp_path), tmp_path / "verdicts.json"
    files = ["a/rows.tsv", "a/big.tsv.gz", "a/free.txt"]
    assert manifest.verify(data, files, cache=cache) == {
        "a/rows.tsv": "sha256 ok", "a/big.tsv.gz": "sha256 ok", "a/free.txt": "exists; MANIFEST.md gives no size or sha256 for it"}
    # The second time costs a stat per file: the verdict is cached by size and mtime.
    monkeypatch.setattr(manifest, "_digest", lambda path: pytest.fail(f"{path} hashed again"))
    assert set(manifest.verify(data, files, cache=cache).values()) >= {"sha256 ok (cached)"}
    monkeypatch.undo()

    # A file cut at a line boundary still parses: only its size and hash give it away.
    (data / "a" / "rows.tsv").write_text("x\ty\n1\t2\n")
    with pytest.raises(manifest.DataError, match=r"a/rows.tsv: size 8 bytes, MANIFEST.md expects 12"):
        manifest.verify(data, files, cache=cache)
    (data / "a" / "rows.tsv").write_text("x\ty\n1\t2\n3\t5\n")  # same size, other bytes
    with pytest.raises(manifest.DataError, match=r"a/rows.tsv: sha256 [0-9a-f]{64}, MANIFEST.md expects [0-9a-f]{64}"):
        manifest.verify(data, files, cache=cache)
    (data / "a" / "big.tsv.gz").write_bytes((data / "a" / "big.tsv.gz").read_bytes()[:-20])
    with pytest.raises(manifest.DataError, match=r"big.tsv.gz is not a whole gzip file"):
        manifest.verify(data, ["a/big.tsv.gz"], cache=cache)
    with pytest.raises(FileNotFoundError, match=r"a/gone.tsv is missing \(needed; not even listed in"):
        manifest.verify(data, ["a/gone.tsv"], cache=cache)


def test_a_fetched_data_folder_is_verified_byte_for_byte(tmp_path):
    # `run.py data` writes MANIFEST.md with eval.manifest.render_markdown: the pre-run check must
    # read every entry of it, so that one byte changed in a fetched file is refused.
    content = b"sentence1\tsentence2\tscore\na\tb\t1.0\n"
    entry = Entry(file="sts/x/test.tsv", sha256=hashlib.sha256(content).hexdigest(), size=len(content),
                  derivation="copy", inputs=(), licence="CC0", family="sts", dataset="x", split="test", rows="1")
    data = tmp_path / "data"
    (data / "sts" / "x").mkdir(parents=True)
    (data / "MANIFEST.md").write_text(render_markdown([entry]))
    (data / "sts" / "x" / "test.tsv").write_bytes(content)
    assert manifest.read_manifest(data) == {entry.file: manifest.Entry(entry.size, entry.sha256)}
    assert manifest.verify(data, [entry.file], cache=tmp_path / "verdicts.json") == {entry.file: "sha256 ok"}
    (data / "sts" / "x" / "test.tsv").write_bytes(content.replace(b"1.0", b"1.5"))
    with pytest.raises(manifest.DataError, match=r"sts/x/test.tsv: sha256 [0-9a-f]{64}, MANIFEST.md expects"):
        manifest.verify(data, [entry.file], cache=tmp_path / "verdicts.json")


def test_export_never_writes_over_a_run(fixtures_dir, tmp_path, capsys):
    # --overwrite replaces an earlier export, never the saved model, its run, or a folder of runs.
    emb, lora = make_embedder(fixtures_dir)
    run_dir = tmp_path / "study" / "run"
    emb.save(run_dir / "final", lora)
    (run_dir / "train_history.jsonl").write_text("")
    (tmp_path / "others" / "seed-1" / "checkpoints").mkdir(parents=True)  # a folder of other runs
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for target, why in ((run_dir / "final", "is the embedder exported"), (run_dir, "holds the embedder exported"),
                        (run_dir / "final" / "st", "is inside the embedder exported"),
                        (run_dir / "st", f"is inside the run directory {run_dir}"),
                        (tmp_path / "study", "holds the embedder exported"),
                        (tmp_path / "others", f"holds the run directory {tmp_path / 'others' / 'seed-1'}")):
        with pytest.raises(SystemExit) as e:
            run.main(["export", str(run_dir / "final"), "--to", str(target), "--overwrite"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"--to {target} {why}" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_one_writer_per_run_directory(tmp_path, capsys):
    # A second run given the same --out is refused before it reads or writes there, naming the
    # first one's process; once that process is gone (killed: its lock file stays), a run goes on.
    run_dir = tmp_path / "run"
    code = ("import sys, time; from pathlib import Path; from mltp.hygiene.runlock import hold; "
            "hold(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(RunLocked, match=f"{run_dir} is being written by process {holder.pid} on "):
            hold(run_dir)
        with pytest.raises(SystemExit) as e:
            job.writer_lock(run_dir)
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"error: {run_dir} is being written by process {holder.pid}" in err, err
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / ".lock").exists()  # stale: its process is dead, so the kernel released it
    release = hold(run_dir)
    with pytest.raises(RunLocked, match=f"process {os.getpid()} on"):
        hold(run_dir)  # one writer, even within one process
    release()
    assert not (run_dir / ".lock").exists()


def test_an_edit_that_keeps_the_modification_time_is_still_caught(tmp_path):
    # The verdict cache is keyed on what an edit must change (the inode's change time), not on the
    # size and mtime that `touch -r` or an editor can put back.
    data, cache = small_data_dir(tmp_path), tmp_path / "verdicts.json"
    assert manifest.verify(data, ["a/rows.tsv"], cache=cache) == {"a/rows.tsv": "sha256 ok"}
    path = data / "a" / "rows.tsv"
    st = path.stat()
    path.write_bytes(path.read_bytes().replace(b"3\t4", b"3\t5"))  # same size, other bytes
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(manifest.DataError, match=r"a/rows.tsv: sha256 [0-9a-f]{64}, MANIFEST.md expects"):
        manifest.verify(data, ["a/rows.tsv"], cache=cache)


def test_every_file_of_a_saved_run_follows_the_umask(fixtures_dir, tmp_path):
    # Another user of a shared run directory reads the weights as well as the JSON beside them.
    old = os.umask(0o027)
    try:
        emb, lora = make_embedder(fixtures_dir)
        train(emb, make_rows(), TrainConfig(**{**CFG, "steps": 1}), lora, tmp_path / "run", log=lambda m: None)
        emb.save(tmp_path / "run" / "final", lora)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and any(p.suffix == ".json" for p in files)
    assert {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != 0o640} == {}


def test_an_out_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    for out in (tmp_path / "taken", tmp_path / "taken" / "run"):
        with pytest.raises(SystemExit) as e:
            job.writer_lock(out)
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"error: --out {out}: {tmp_path / 'taken'} is a file, not a folder" in err, err


def test_the_file_table_names_every_file_each_task_reads(data_dir, tmp_path):
    # Each task built from a folder that holds only its listed files (linked): a file the table
    # forgot is a FileNotFoundError here, not a surprise in a run.
    assert set(TASK_FILES) == set(TASKS)
    listed = manifest.read_manifest(data_dir)
    for name, files in TASK_FILES.items():
        assert set(files) <= set(listed), name  # every one has a size and sha256 to check against
        folder = tmp_path / name
        for f in files:
            (folder / f).parent.mkdir(parents=True, exist_ok=True)
            (folder / f).symlink_to(data_dir / f)
        TASKS[name].build(folder, "quick", name)


def test_decontamination_reads_only_the_evaluated_tasks(data_dir, tmp_path):
    # A data folder without the clustering files: a run evaluating BIOSSES still trains.
    folder = tmp_path / "data"
    for f in data_dir.rglob("*"):
        rel = f.relative_to(data_dir)
        if f.is_file() and not rel.parts[0] == "clustering":
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).symlink_to(f)
    rows, dropped = job.training_rows(str(folder), 0, False, ("BIOSSES",))
    assert len(rows) > 1000 and sum(dropped.values()) >= 0


# ---- every input checked before the slow work ----------------------------------------------------------

def broken_model(tiny, tmp_path, how) -> Path:
    model = copy_model(tiny, tmp_path)
    config = json.loads((model / "config.json").read_text())
    if how == "not json":
        (model / "config.json").write_text("{ not json")
    elif how == "six layers":
        (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": "six"}))
    elif how == "truncated weights":
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[: len(data) - 1000])
    elif how == "no tokenizer":
        (model / "tokenizer.json").unlink()
    elif how == "small vocabulary":
        (model / "config.json").write_text(json.dumps({**config, "vocab_size": 50}))
    return model


@pytest.mark.parametrize("how, message", [
    ("not json", "config.json is not valid JSON"),
    ("six layers", "config.json: 'num_hidden_layers' must be an integer, got 'six'"),
    ("truncated weights", "model.safetensors is "),
    ("no tokenizer", "no tokenizer.json in"),
    ("small vocabulary", "tokenizer.json produces token ids up to 96, but"),
])
def test_a_broken_model_directory_is_named_before_any_work(tiny, tmp_path, capsys, how, message):
    model = broken_model(tiny, tmp_path, how)
    out = tmp_path / "run"
    err = refused(["--model", str(model), *RUN, "--out", str(out)], capsys)
    assert message in err and str(model) in err and not out.exists()
    if how == "truncated weights":
        assert "the file is truncated or damaged" in err


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
    (["--heads", "0"], "--heads must be >= 1"),
    (["--heads", "5"], "--pool mltp: hidden_size 64 is not a multiple of --heads 5; give --head-dim"),
    (["--device", "gpu"], "--device gpu: not a device"),
])
def test_bad_flags_are_named_before_any_work(tiny, tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    err = refused(["--model", tiny, *RUN, *argv, "--out", str(out)], capsys)
    assert message in err and not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--max-length", "1"], "--max-length 1 holds no training text"),
    (["--max-length", "54"], "--max-length 54 holds no training text: the shortest instruction takes 53 tokens"),
])
def test_a_max_length_that_holds_no_training_text_is_named_before_any_work(tiny, data_dir, tmp_path, capsys, argv, message):
    # The shortest instruction is read from the training sources: this check needs the data.
    test_bad_flags_are_named_before_any_work(tiny, tmp_path, capsys, argv, message)


def test_a_data_folder_without_the_tasks_files_is_named(tiny, tmp_path, data_dir, capsys):
    (tmp_path / "data").mkdir()
    shutil.copy(data_dir / "MANIFEST.md", tmp_path / "data")
    err = refused(["--model", tiny, *RUN, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run")], capsys)
    assert "data file " in err and "biosses_test.tsv is missing (listed in" in err
    assert not (tmp_path / "run").exists()
