"""The command line: one program as `mltp`, `python -m mltp` and run.py; each command with its own flags."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import run
from mltp import cli
from mltp.cli import settings

ROOT = Path(__file__).resolve().parents[1]
# command and the arguments it needs -> a flag of another command
FOREIGN = {("data",): "--pool", ("export", "RUN/final", "--to", "DIR"): "--steps",
           ("encode", "--model", "M", "--input", "I", "--output", "O"): "--pool", ("probe",): "--lr",
           ("intervene",): "--model", ("ablation",): "--pool", ("train",): "--every"}


def refused(argv, capsys, prog=None) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv, prog=prog) if prog else run.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", FOREIGN.items(), ids=[argv[0] for argv in FOREIGN])
def test_a_command_refuses_a_flag_it_does_not_use(argv, flag, capsys):
    err = refused([*argv, flag, "1"], capsys)
    assert f"run.py {argv[0]}: error: unrecognized arguments: {flag}" in err


def test_messages_name_the_command_the_user_typed(capsys):
    assert "mltp data: error: unrecognized arguments: --pool" in refused(["data", "--pool", "mean"], capsys, prog="mltp")
    assert "python -m mltp: error: unknown command 'trian'" in refused(["trian"], capsys, prog="python -m mltp")


def test_the_overview_lists_every_command_and_each_help_starts_with_what_it_does(capsys):
    run.main(["--help"])
    overview = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        assert f"  {name}" in overview and command.does in overview
    for name, command in cli.COMMANDS.items():
        with pytest.raises(SystemExit):
            run.main([name, "--help"])
        first = capsys.readouterr().out.splitlines()[0]
        assert first.startswith(command.does[0].upper() + command.does[1:]) and "two cores" in first + command.takes


def test_no_command_and_train_are_the_same_command():
    bare, _ = cli.parse(["--pool", "mltp", "--layers", "middle4", "--no-layer-weights"])
    named, _ = cli.parse(["train", "--pool", "mltp", "--layers", "middle4", "--no-layer-weights"])
    assert bare.command == named.command == "train"
    assert {k: v for k, v in vars(bare).items() if k != "argv"} == {k: v for k, v in vars(named).items() if k != "argv"}


def test_the_data_is_looked_for_beside_the_checkout_run_from_not_the_package(tmp_path, monkeypatch):
    def staged(path: Path) -> Path:
        path.mkdir(parents=True)
        (path / "MANIFEST.md").write_text("# Data manifest\n")
        return path

    monkeypatch.delenv("MLTP_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    checkout = tmp_path / "clone" / "mltp"
    (checkout / "mltp").mkdir(parents=True)
    (checkout / "run.py").write_text("")
    (checkout / "runs" / "x").mkdir(parents=True)
    shared, user = staged(tmp_path / "clone" / "shared" / "data"), staged(tmp_path / "xdg" / "mltp" / "data")

    def found(argv=()):
        args = cli.parse(["--device", "cpu", *argv])[0]
        settings.resolve_data_dir(args, log=lambda m: None)
        return Path(args.data_dir)

    monkeypatch.chdir(tmp_path)  # outside any checkout: the user data folder
    assert found() == user
    monkeypatch.chdir(checkout / "runs" / "x")  # inside one, at any depth: ../shared/data beside it
    assert found() == shared
    monkeypatch.setenv("MLTP_DATA_DIR", str(staged(tmp_path / "env")))
    assert found() == tmp_path / "env"
    assert found(["--data-dir", str(user)]) == user
    help_text = " ".join(subprocess.run([sys.executable, "run.py", "train", "--help"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.split())
    assert "looked for in this order: --data-dir; $MLTP_DATA_DIR; ../shared/data beside the checkout" in help_text


def test_the_tests_skip_by_the_runs_own_data_lookup(tmp_path, monkeypatch, capsys):
    # A clone with no data: a test that needs it skips, naming where it looked, exactly when a run
    # given no --data-dir would stop for want of it; where a run finds it, so does the test.
    from conftest import benchmark_data_or_skip
    monkeypatch.setenv("MLTP_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(pytest.skip.Exception, match=r"benchmark data not found \(\$MLTP_DATA_DIR: .*nowhere\)"):
        benchmark_data_or_skip()
    with pytest.raises(SystemExit):
        run.main(["--model", str(ROOT / "tests" / "fixtures" / "tiny"), "--device", "cpu"])
    assert "no benchmark data" in capsys.readouterr().err
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "MANIFEST.md").write_text("# Data manifest\n")
    assert benchmark_data_or_skip() == tmp_path / "nowhere"


def test_python_dash_m_mltp_is_the_same_program(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mltp", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "usage: python -m mltp [COMMAND]" in done.stdout
    assert all(f"  {name}" in done.stdout for name in cli.COMMANDS)


def test_pip_install_gives_an_mltp_command_that_runs_outside_the_checkout(tmp_path):
    # The package as pip builds it (no editable link to this checkout), from a copy of its sources
    # (no build/ left over from another build), into a folder of its own.
    source = tmp_path / "source"
    for name in ("mltp", "eval"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    target = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import mltp.cli.train, eval; print(mltp.__file__, eval.__file__)"],
                           cwd=away, env=env, capture_output=True, text=True)
    assert where.stdout.split() == [str(target / "mltp" / "__init__.py"), str(target / "eval" / "__init__.py")], where
    done = subprocess.run([str(target / "bin" / "mltp"), "--help"], cwd=away, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "usage: mltp [COMMAND]" in done.stdout, done.stderr
    refused_ = subprocess.run([str(target / "bin" / "mltp"), "data", "--pool", "mean"], cwd=away, env=env,
                              capture_output=True, text=True)
    assert refused_.returncode == 2 and "mltp data: error: unrecognized arguments: --pool" in refused_.stderr
