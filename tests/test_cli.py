import subprocess
import sys

import pytest

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
    assert err.startswith("error:") and "tuner=nonexistent" in err and "bayesian" in err and "\n" not in err


def test_missing_data_is_one_line(tmp_path, capsys):
    assert main(["tune", f"data.root={tmp_path / 'nothing'}", "model=tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dataset not found" in err and "fetch-data" in err and "\n" not in err


@pytest.mark.slow  # a real process
def test_tune_end_to_end_through_python_m(overrides, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fashion_exp", "tune", *overrides, "tuner.max_trials=1", "tuner.epochs=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Best trial 0" in done.stdout and "python -m fashion_exp ui" in done.stdout
    from mlflow.tracking import MlflowClient

    uri = next(o for o in overrides if o.startswith("tracking.uri="))[len("tracking.uri=") :]
    for run in MlflowClient(uri).search_runs(["1"]):  # the parent and its trial: where each came from
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "python -m fashion_exp tune" and tags["mlflow.user"]
        assert tags["fashion_exp.command_line"].startswith("python -m fashion_exp tune data.root=")
        assert len(tags["mlflow.source.git.commit"]) == 40  # this checkout's commit


def test_an_error_from_the_tracking_store_is_one_line(monkeypatch, capsys):
    """An MLflow or database error no command turned into a UserError still reaches the user as one line."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    from fashion_exp.tracking import registry

    errors = [
        MlflowException("API request to http://tracker:5000 failed: Max retries exceeded\n  (details)"),
        sqlalchemy.exc.OperationalError("UPDATE ...", {}, Exception("database is locked")),
    ]
    for error in errors:

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(registry, "rollback", fail)
        assert main(["promote", "--rollback"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: MLflow: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "Max retries exceeded" in str(errors[0]) and "database is locked" in err


def test_a_bug_still_shows_its_traceback(monkeypatch):
    from fashion_exp.tracking import registry

    def fail(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(registry, "rollback", fail)
    import pytest

    with pytest.raises(ZeroDivisionError):
        main(["promote", "--rollback"])


def test_a_store_in_a_missing_folder_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["promote", f"tracking.uri=sqlite:///{missing / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no MLflow store at {missing / 'mlflow.db'} ") and err.count("\n") == 1
    assert not missing.exists()  # nothing created: no folder, no lock file
