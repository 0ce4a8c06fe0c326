import subprocess
import sys

from fashion_exp.cli import main


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr().out
    assert "tune" in out and "fetch-data" in out


def test_tune_help_shows_groups_and_overrides(capsys):
    try:
        main(["tune", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "tuner:" in out and "bayesian" in out and "tuner.max_trials=30" in out


def test_bad_override_is_one_line_exit_2(capsys):
    assert main(["tune", "tuner=nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "tuner/nonexistent" in err and "\n" not in err


def test_missing_data_is_one_line(tmp_path, capsys):
    assert main(["tune", f"data.root={tmp_path / 'nothing'}", "model=tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dataset not found" in err and "fetch-data" in err and "\n" not in err


def test_tune_end_to_end_through_python_m(overrides, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fashion_exp", "tune", *overrides, "tuner.max_trials=1", "tuner.epochs=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Best trial 0" in done.stdout and "mlflow ui" in done.stdout
