"""A quiet, fast start: the config, arguments and weights file are checked before TensorFlow is
imported; typos get the closest key; read-only commands create no store; TensorFlow's and MLflow's
start-up lines stay off the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fashion_exp.cli import main

# What TensorFlow 2.21 and MLflow print at start-up on a CPU machine, before the product's own lines.
NOISE = ("absl::InitializeLog", "oneDNN", "Could not find cuda drivers", "cuInit", "INFO mlflow", "Warning:")


def in_subprocess(code: str, cwd, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env={**environment, **env}, capture_output=True, text=True, timeout=300
    )


CLI_THEN_MODULES = """
import sys
from fashion_exp.cli import main
code = main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules, "exit:", code)
"""


def run_cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI_THEN_MODULES, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "override, expected",
    [
        ("tuner.max_trail=3", "tuner.max_trail: no such config key (did you mean tuner.max_trials?)"),
        ("+tuner.max_trail=3", "Key 'max_trail' not in 'TunerConfig' (did you mean tuner.max_trials?)"),
        ("tunr.type=random", "tunr.type: no such config key (did you mean tuner.type?)"),
        ("final.hp.learnin_rate=0.1", "(did you mean final.hp.learning_rate?)"),
        ("tuner=foo", "tuner=foo: no such tuner option (choose one of: bayesian, grid, hyperband, random)"),
    ],
)
def test_a_typo_gets_the_closest_key_in_one_line(override, expected, capsys):
    assert main(["show-config", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert "+tuner" not in err.replace(override, "") and "search path" not in err  # not Hydra's advice or dump


def test_a_key_nothing_resembles_points_at_show_config(capsys):
    assert main(["show-config", "zzzz=1"]) == 2
    assert "zzzz: no such config key (python -m fashion_exp show-config lists the keys)" in capsys.readouterr().err


@pytest.mark.slow  # a real process
def test_tune_answers_a_bad_key_before_importing_tensorflow(tmp_path):
    done = run_cli(["tune", "tuner.max_trail=3"], tmp_path)
    assert "did you mean tuner.max_trials?" in done.stderr and done.stderr.count("\n") == 1
    assert "tensorflow imported: False exit: 2" in done.stdout


@pytest.mark.slow  # a real process
def test_train_final_without_a_search_says_so_before_importing_tensorflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_cli(["train-final", f"tracking.uri={uri}", "model=tiny", f"data.root={tmp_path / 'none'}"], tmp_path)
    assert done.stderr.startswith("error: no finished tune search in experiment") and done.stderr.count("\n") == 1
    assert "tensorflow imported: False exit: 2" in done.stdout


@pytest.mark.slow  # a real process
@pytest.mark.parametrize("command", ["evaluate", "export-onnx", "combine"])
def test_a_model_command_checks_its_photos_before_importing_tensorflow(command, tmp_path):
    """evaluate, export-onnx and combine find the model's photos (Command.inputs) before the 6 s import."""
    models = [tmp_path / "model", tmp_path / "other"][: 2 if command == "combine" else 1]
    for model in models:
        model.mkdir()
    store, missing = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "none"
    named = [word for model in models for word in ("--model", str(model))]
    done = run_cli([command, *named, store, f"data.root={missing}"], tmp_path)
    assert done.stderr.startswith(f"error: dataset not found at {missing}") and done.stderr.count("\n") == 1
    assert "tensorflow imported: False exit: 2" in done.stdout


@pytest.mark.slow  # a real process
def test_combine_with_one_model_says_so_before_importing_tensorflow(tmp_path):
    done = run_cli(["combine", "--model", "models:/fashion-classifier/1"], tmp_path)
    assert done.stderr == "error: combine: give two --model or more (registry URIs, runs:/ URIs or model folders)\n"
    assert "tensorflow imported: False exit: 2" in done.stdout


@pytest.mark.slow  # a real process
def test_a_missing_weights_file_is_one_line_before_the_scan_and_tensorflow(tmp_path, dataset_root):
    missing = tmp_path / "nope.weights.h5"
    work = tmp_path / "work"
    done = run_cli(["tune", f"data.root={dataset_root}", f"model.weights={missing}", f"work_dir={work}"], tmp_path)
    assert f"model.weights: no weights file at {missing}" in done.stderr and done.stderr.count("\n") == 1
    assert "tensorflow imported: False exit: 2" in done.stdout
    assert not work.exists()  # the dataset scan (which caches into work_dir) never ran


@pytest.mark.parametrize(
    "args", [["promote"], ["promote", "--rollback"], ["evaluate"], ["serve"], ["export-onnx"], ["predict", "x.jpg"]]
)
def test_read_only_commands_create_no_store_and_say_what_to_run_first(args, tmp_path, capsys):
    (tmp_path / "x.jpg").write_bytes(b"")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"no MLflow store at {tmp_path / 'mlflow.db'} (tracking.uri=sqlite:///mlflow.db)" in err
    assert "python -m fashion_exp tune" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg"]  # no mlflow.db, no lock files, no mlruns


def test_serve_without_a_champion_says_how_to_get_one(overrides, capsys):
    assert main(["serve", *overrides]) == 2
    err = capsys.readouterr().err
    assert "no version with alias 'champion' yet: run train-final, then evaluate, then promote" in err
    assert err.count("\n") == 1


@pytest.mark.slow  # a real process
def test_tune_prints_no_tensorflow_or_mlflow_start_up_lines(overrides, tmp_path):
    """A new store (MLflow's INFO lines) and TensorFlow's first import (its C++ lines), as a user sees them."""
    (tmp_path / "mlflow.db").unlink()
    code = (
        f"import sys; from fashion_exp.cli import main; sys.exit(main({['tune', *overrides, 'tuner.max_trials=1']!r}))"
    )
    quiet = in_subprocess(code, tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not [word for word in NOISE if word in quiet.stdout + quiet.stderr], quiet.stderr[-3000:]
    assert "Best trial 0" in quiet.stdout
    loud = in_subprocess(code.replace("'tune'", "'tune', '--verbose'") + "", tmp_path)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "absl::InitializeLog" in loud.stderr  # --verbose shows them: the quiet run held them back


LIBRARY_WARNINGS = """
import warnings
from fashion_exp import quiet
quiet.configure()
for module in ("sklearn.gaussian_process.kernels", "keras.src.saving.saving_lib", "fashion_exp.search.run"):
    warnings.warn_explicit(f"a warning from {module}", UserWarning, module.replace(".", "/") + ".py", 1, module)
"""


def test_library_warnings_are_held_back_unless_verbose(tmp_path):
    """scikit-learn's ConvergenceWarning (keras-tuner's Bayesian oracle) and Keras' UserWarning on a
    loaded checkpoint printed between a command's own lines; the product's own warnings still show."""
    quiet = in_subprocess(LIBRARY_WARNINGS, tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "sklearn" not in quiet.stderr and "keras" not in quiet.stderr
    assert "a warning from fashion_exp.search.run" in quiet.stderr
    loud = in_subprocess(LIBRARY_WARNINGS, tmp_path, FASHION_VERBOSE="1")
    assert all(f"a warning from {name}" in loud.stderr for name in ("sklearn.gaussian", "keras.src", "fashion_exp"))


def test_mlflow_sends_no_telemetry_unless_the_user_turns_it_on(tmp_path):
    """MLflow 3 reports usage to its makers unless told not to (it stays quiet only in CI or under
    pytest): importing fashion_exp tells it not to, and a user's own MLFLOW_DISABLE_TELEMETRY wins."""
    code = """
import os
import fashion_exp
from fashion_exp import quiet
from mlflow.telemetry.utils import is_telemetry_disabled
print(is_telemetry_disabled())
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "false"  # as a user who wants it would have set it
quiet.configure()
print(is_telemetry_disabled())
"""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}  # (no CI=, no PYTEST_*)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "False"], done.stdout
