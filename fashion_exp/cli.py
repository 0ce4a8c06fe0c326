"""Command line: parse arguments, turn leftover key=value words into Hydra overrides, dispatch.

Heavy imports (TensorFlow, MLflow) happen inside the commands so that --help answers at once.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_exp import screen, signals
from fashion_exp.config import CONFIG_DIR
from fashion_exp.errors import UserError
from fashion_exp.redact import redact

EXAMPLES = """\
overrides (key=value words, Hydra syntax):
  python -m fashion_exp tune tuner=bayesian tuner.max_trials=30 data.image_size=150
  python -m fashion_exp tune search=continuous augmentation=[none,shear_zoom_flip,rotate_shift_flip]
  python -m fashion_exp tune data=clothing_tiny tuner.max_trials=4      # a one-minute debug run
  python -m fashion_exp tune fresh=true                                  # new search, do not resume
"""


def _groups(config_dir: Path) -> str:
    lines = ["config groups (pick one with group=name):"]
    for group in sorted(p for p in config_dir.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        lines.append(f"  {group.name + ':':<14} {', '.join(options)}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_exp",
        description="Find, track and ship the best Xception transfer-learning fashion classifier.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show TensorFlow's and MLflow's own log lines (FASHION_VERBOSE=1)"
    )
    epilog = _groups(CONFIG_DIR) + "\n\n" + EXAMPLES if CONFIG_DIR.is_dir() else EXAMPLES
    command = _command_adder(parser.add_subparsers(dest="command", metavar="COMMAND"), epilog)
    _add_search_commands(command)
    _add_setup_commands(command)
    _add_final_commands(command)
    _add_model_commands(command)
    return parser


AddCommand = Callable[[str, str], argparse.ArgumentParser]  # (name, help) -> the subcommand's parser


def _command_adder(commands, epilog: str) -> AddCommand:
    """A function that adds a subcommand taking key=value overrides, with the config groups as its epilog."""

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra config overrides")
        return sub

    return command


def _add_search_commands(command: AddCommand) -> None:
    command("tune", "search head hyperparameters with keras-tuner, tracked in MLflow (resumes by default)")
    worker = command(
        "tune-worker", "run trials for a distributed search's chief (tune tuner.role=chief) on this machine"
    )
    worker.add_argument("--chief", required=True, metavar="HOST:PORT", help="where the chief's oracle listens")
    worker.add_argument(
        "--search",
        metavar="ID",
        help="join this search of the chief's, with the settings it published in work_dir (the chief's own workers); "
        "default: the search the overrides name and, for preset=best, every stage after it",
    )
    worker.add_argument(
        "--worker-id",
        help="this worker's id; restart a dead worker with its id to re-run its trial (default: worker-<host name>)",
    )


def _add_setup_commands(command: AddCommand) -> None:
    fetch = command("fetch-data", "download clothing-dataset-small to data.root")
    fetch.add_argument("--force", action="store_true", help="download again even if the data is there")
    command("show-config", "print the resolved config")
    ui = command("ui", "mlflow ui on tracking.uri's store, experiments opening on their runs table (Ctrl-C stops it)")
    ui.add_argument("--host", help="address to listen on (default: tracking.ui_host, 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, help="port (default: tracking.ui_port, 5000)")
    ui.add_argument(
        "--expose",
        action="store_true",
        help="listen on a host other machines reach although the UI has no login (anyone who reaches the port "
        "reads and changes the whole store)",
    )


def _add_final_commands(command: AddCommand) -> None:
    command("train-final", "train the 299x299 model with a search's best hyperparameters; log and register it")
    combine = command(
        "combine", "average registered models in one model that runs their common frozen backbone once; register it"
    )
    combine.add_argument(
        "--model", action="append", default=[], metavar="MODEL", help="a member (URI or folder); give two or more"
    )
    evaluate = command("evaluate", "evaluate a model on the test split and log the results to its run")
    evaluate.add_argument("--model", help="model URI or folder (default: the latest train-final run's model)")
    promote = command("promote", "point the registry alias 'champion' at a model version")
    which = promote.add_mutually_exclusive_group()
    which.add_argument("--version", help="version to promote (default: the evaluated one best on validation)")
    which.add_argument("--run", help="promote the version this train-final run registered")
    which.add_argument("--rollback", action="store_true", help="swap 'champion' and 'previous'")
    promote.add_argument("--force", action="store_true", help="promote even if worse or not evaluated")


def _add_model_commands(command: AddCommand) -> None:
    champion = "model URI or folder (default: models:/<final.registered_model>@champion)"
    predict = command("predict", "top-k categories for image files and folders")
    predict.add_argument("--model", help=champion)
    predict.add_argument("--top-k", type=int, help="categories shown per image (default: predict.top_k)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    serve = command("serve", "serve the model over HTTP: POST /predict, GET /health, /version and the upload page")
    serve.add_argument("--model", help=champion)
    export = command("export-onnx", "export a model to ONNX, check it against Keras, log it to the model's run")
    export.add_argument("--model", help=champion)


def _split(parser: argparse.ArgumentParser, words: list[str], paths_allowed: bool = False):
    """(overrides, paths): key=value words are overrides; other words are paths where allowed."""
    overrides, paths = [], []
    for word in words:
        if "=" in word and not Path(word).exists():
            overrides.append(word)
        elif paths_allowed:
            paths.append(word)
        else:
            parser.error(f"'{word}' is not a key=value override")
    return overrides, paths


def cmd_tune(config, args, overrides: list[str]) -> int:
    from fashion_exp.search.stages import run_tune

    tuned = run_tune(config, overrides=overrides)
    staged = len(tuned.searches) > 1 or tuned.skipped
    for number, result in enumerate(tuned.searches, 1):
        _print_search(result, f"Stage {number}: best trial" if staged else "Best trial")
    for line in tuned.skipped:
        print(f"Skipped {line}")
    if tuned.spent:
        spent = ", ".join(f"{stage} {minutes:.1f} min" for stage, minutes in tuned.spent.items())
        print(f"Time spent (every run of this command): {spent}, of tuner.max_minutes={config.tuner.max_minutes:g}")
    if tuned.tune_run_id:
        print(f"The tune's MLflow parent run: {tuned.tune_run_id} (its stages' searches are nested in it)")
    result = tuned.last
    if result.best_trial_id is None:
        return 1
    if result.experiment_id:
        from fashion_exp.tracking.experiments import ui_link

        link = ui_link(config.tracking, result.experiment_id, result.parent_run_id, default_uri())
        print(f"Compare the trials (best first): {link}")
    return 0


def default_uri() -> str:
    """The tracking URI `ui` opens without a tracking.uri= override (conf's, or MLFLOW_TRACKING_URI)."""
    from fashion_exp.config import load_config

    return load_config([]).tracking.uri


def _print_search(result, title: str) -> None:
    if result.best_trial_id is None:
        print(f"No trial completed. Parent run {result.parent_run_id} holds the errors.")
        return
    print(f"\n{title} {result.best_trial_id}: {result.objective} {result.best_score:.4f}")
    for key, value in result.best_hyperparameters.items():
        print(f"  {key} = {value}")
    print(f"MLflow parent run {result.parent_run_id} ({result.trials} trials) in {redact(result.tracking_uri)}")


def check_tune_worker(args) -> None:
    """--chief and --worker-id, before TensorFlow is imported: a typo costs no wait."""
    import socket

    from fashion_exp.config import check_address

    check_address("--chief", args.chief)
    if args.worker_id is None:
        args.worker_id = "worker-" + socket.gethostname().replace("chief", "head")
    if not args.worker_id or "chief" in args.worker_id or "/" in args.worker_id:
        raise UserError(f"--worker-id '{args.worker_id}': must be non-empty, without '/' and not contain 'chief'")
    if args.search is not None and not re.fullmatch(r"[0-9a-f]{12}", args.search):
        raise UserError(
            f"--search '{args.search}': a search id is 12 hex digits (tune prints it: 'Started search ...')"
        )


def cmd_tune_worker(config, args, overrides: list[str]) -> int:
    from fashion_exp.search.worker import run_worker

    run_worker(config, args.chief, args.worker_id, args.search)
    return 0


def cmd_fetch_data(config, args, overrides: list[str]) -> int:
    from fashion_exp.data.download import fetch_dataset, has_dataset

    root = Path(config.data.root)
    if has_dataset(root) and not args.force:
        print(f"Dataset already at {root.resolve()} (use --force to download again)")
        return 0
    if fetch_dataset(config.data.url, root, args.force, config.data.download_timeout_s):
        print(f"Dataset ready at {root.resolve()}")
    else:
        print(f"Dataset ready at {root.resolve()} (downloaded by the fetch-data this one waited for)")
    return 0


def with_search_inputs(config, overrides: list[str]):
    """train-final's config under the preset of the search it trains from (preset=best sets the final
    model's settings too) and its data folder, backbone and weights (fashion_exp/inputs.py), unless
    the command line (or FASHION_DATA / FASHION_WEIGHTS) names them."""
    from fashion_exp.config import flatten
    from fashion_exp.inputs import inherited
    from fashion_exp.tracking.queries import search_config, search_preset

    words = []
    preset = search_preset(config.tracking.uri, config.tracking.experiment, config.from_run)
    if not any(word.startswith("preset=") for word in overrides) and preset not in (None, config.preset):
        print(
            f"preset={preset}: the preset of the search this model is trained from (give preset=... to choose another)"
        )
        words.append(f"preset={preset}")
    recorded = search_config(config.tracking.uri, config.tracking.experiment, config.from_run)
    return _reloaded(config, overrides, words, inherited(recorded, flatten(config), overrides), "the search")


def with_model_inputs(config, overrides: list[str], reference: str):
    """The config with the data folder of the model's train-final run, unless the command line (or
    FASHION_DATA) names one: evaluate, combine and export-onnx score that model's photos."""
    from fashion_exp.config import flatten
    from fashion_exp.inputs import DATA_ONLY, inherited
    from fashion_exp.tracking import registry
    from fashion_exp.tracking.queries import run_config

    run_id = registry.run_of(reference, config.tracking.uri)
    if run_id is None:
        return config
    found = inherited(run_config(config.tracking.uri, run_id), flatten(config), overrides, DATA_ONLY)
    return _reloaded(config, overrides, [], found, f"model {reference}")


def _reloaded(config, overrides: list[str], words: list[str], found: list[str], source: str):
    """config composed again with `words` and the inputs `found` in `source` (said in one line)."""
    if not words and not found:
        return config
    from fashion_exp.config import load_config

    if found:
        print(f"From {source}: {' '.join(found)} (give another value on the command line to change it)")
    return load_config([*words, *found, *overrides])


def require_data(config, splits: list[str]) -> None:
    """The dataset's folders, checked before any other work (a missing one is one line)."""
    from fashion_exp.data.dataset import find_samples

    find_samples(Path(config.data.root), splits, None)


def search_inputs(config, args, overrides: list[str]):
    """train-final's config: the search's preset and inputs, its photos checked."""
    config = with_search_inputs(config, overrides)
    require_data(config, ["train", "validation"])
    return config


def model_inputs(default: Callable[[Any], str], splits: list[str]) -> Callable:
    """A job's config that reads a model's photos (evaluate, export-onnx): the model's data folder,
    the `splits` checked. args.model becomes the model the job loads (`default(config)` if none is given)."""

    def found(config, args, overrides: list[str]):
        args.model = args.model or default(config)
        config = with_model_inputs(config, overrides, args.model)
        require_data(config, splits)
        return config

    return found


def _latest_model(config) -> str:
    from fashion_exp.final.evaluate import latest_model

    return latest_model(config)


def cmd_train_final(config, args, overrides: list[str]) -> int:
    from fashion_exp.final.train import train_final

    result = train_final(config)
    print(
        f"\nBest epoch {result.best_epoch} of the seed-{result.seed} restart: "
        f"val_accuracy {result.val_accuracy:.4f} with {result.hyperparameters.as_dict()}"
    )
    if result.ensemble_size > 1:
        size, accuracy = result.ensemble_size, result.ensemble_val_accuracy
        print(f"Shipped: an ensemble of {size} heads (final.ensemble), val_accuracy {accuracy:.4f}")
    print(
        f"Assembled model vs cached-feature head on validation photos: max |diff| {result.max_abs_diff:.2e}, "
        f"top-1 agreement {result.top1_agreement:.1%}"
    )
    name = config.final.registered_model
    print(f"MLflow run {result.run_id}; registered '{name}' version {result.version}")
    print(f"Next: python -m fashion_exp evaluate --model models:/{name}/{result.version}")
    return 0


def check_combine(args) -> None:
    """Two --model or more, none twice: before the config and TensorFlow."""
    from fashion_exp.final.references import check_references

    check_references(args.model or [])


def combine_inputs(config, args, overrides: list[str]):
    """combine's config: the first model's data folder, its validation photos checked."""
    config = with_model_inputs(config, overrides, args.model[0])
    require_data(config, ["validation"])
    return config


def cmd_combine(config, args, overrides: list[str]) -> int:
    from fashion_exp.final.combine import combine

    result = combine(config, args.model)
    name = config.final.registered_model
    print(f"MLflow run {result.run_id}; registered '{name}' version {result.version}")
    print(f"Next: python -m fashion_exp evaluate --model models:/{name}/{result.version}")
    return 0


def cmd_evaluate(config, args, overrides: list[str]) -> int:
    from fashion_exp.final.evaluate import evaluate

    evaluate(config, args.model)
    return 0


def cmd_promote(config, args, overrides: list[str]) -> int:
    from fashion_exp.tracking import registry

    name = config.final.registered_model
    if args.rollback:
        changes = registry.rollback(config.tracking.uri, name)
    else:
        changes = registry.promote(config.tracking.uri, name, version=args.version, run_id=args.run, force=args.force)
    for change in changes:
        print(change)
    return 0


def check_predict(args) -> None:
    if not args.paths:
        raise UserError("predict needs at least one image file or folder")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be at least 1")


def cmd_predict(config, args, overrides: list[str]) -> int:
    from fashion_exp.serving.backends import open_predictor
    from fashion_exp.serving.predict import expand, format_json, format_table, predict_files

    k = args.top_k or config.predict.top_k
    files = expand(args.paths)
    reference, settings = args.model or _champion(config), config.predict
    opened = open_predictor(reference, config.tracking.uri, settings.backend, config.model.cpu_features)
    loaded = opened.predictor
    print(f"Predicting with {reference} (version {loaded.version}) on {opened.backend} [{opened.why}]", file=sys.stderr)
    predictions = predict_files(
        loaded, files, min(k, len(loaded.class_names)), config.data.max_image_pixels, config.model.batch_size
    )
    print(format_json(predictions) if args.json else format_table(predictions))
    return 1 if any(p.error for p in predictions) else 0


def _champion(config) -> str:
    return f"models:/{config.final.registered_model}@champion"


def check_serve_port(config) -> None:
    """Fail in one line before loading a model if the port is taken."""
    import socket

    settings = config.serve
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as err:
            raise UserError(
                f"cannot listen on {settings.host}:{settings.port} ({err.strerror}): pass serve.port=..."
            ) from None


def cmd_serve(config, args, overrides: list[str]) -> int:
    import uvicorn

    from fashion_exp.serving.app import ServeSettings, create_app
    from fashion_exp.serving.backends import open_predictor
    from fashion_exp.serving.connections import uvicorn_options

    check_serve_port(config)
    settings = config.serve
    reference = args.model or _champion(config)
    opened = open_predictor(reference, config.tracking.uri, settings.backend, config.model.cpu_features)
    predictor = opened.predictor
    print(
        f"Serving {reference} (version {predictor.version}) on {opened.backend} [{opened.why}] at "
        f"http://{settings.host}:{settings.port}/",
        flush=True,
    )
    app = create_app(predictor, ServeSettings.from_config(config, opened.backend))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", **uvicorn_options(settings))
    return 0


def cmd_export_onnx(config, args, overrides: list[str]) -> int:
    from fashion_exp.final.onnx_export import export

    result = export(config, args.model)
    print(
        f"ONNX vs Keras on {result.images} validation photos: max |diff| {result.max_abs_diff:.2e}, "
        f"top-1 agreement {result.top1_agreement:.1%}"
    )
    verdict = "holds: serve.backend=auto serves it" if result.int8_holds else "lost accuracy: auto will not serve it"
    print(
        f"ONNX int8 vs Keras: top-1 agreement {result.int8_agreement:.1%}, validation accuracy "
        f"{result.int8_accuracy:.4f} vs {result.keras_accuracy:.4f} ({verdict})"
    )
    if result.bf16:
        bf16 = result.bf16
        if bf16.precision != "bf16":
            verdict = f"OpenVINO ran {bf16.precision} on this CPU (no BF16 units): auto will not serve it"
        else:
            gate = result.bf16_gate.describe(result.rule)
            verdict = f"holds: serve.backend=auto may serve it; {gate}" if result.bf16_holds else f"fails: {gate}"
        print(
            f"OpenVINO bf16 vs Keras: top-1 agreement {bf16.agreement:.1%}, largest probability difference "
            f"{bf16.max_prob_diff:.2e} ({verdict})"
        )
    speeds = ", ".join(f"{name} {row.images_per_s:.1f}" for name, row in result.compared.items())
    print(f"Images a second on the validation photos: keras {result.keras_images_per_s:.1f}, {speeds}")
    where = f" in run {result.run_id}" if result.run_id else ""
    print(f"ONNX files: {result.path}, {result.int8_path}{where}")
    return 0 if result.top1_agreement == 1.0 else 1


def cmd_ui(config, args, overrides: list[str]) -> int:
    from fashion_exp.tracking.ui import run_ui

    try:
        host, port = args.host or config.tracking.ui_host, args.port or config.tracking.ui_port
        return run_ui(config.tracking.uri, host, port, Path(config.work_dir) / "ui.log", expose=args.expose)
    except KeyboardInterrupt:  # Ctrl-C is how it ends
        print("\nMLflow UI stopped")
        return 0


def cmd_show_config(config, args, overrides: list[str]) -> int:
    from fashion_exp.config import to_yaml

    print(redact(to_yaml(config)), end="")  # no password of a tracking URI on the screen
    return 0


@dataclass(frozen=True)
class Command:
    """One subcommand: its job, and what is checked before the job's heavy imports."""

    run: Callable[..., int]
    tensorflow: bool = True  # import TensorFlow (quietly) before the job
    backbone: bool = False  # the job builds the backbone: check model.weights first
    check: Callable[[Any], None] | None = None  # argument checks that need no config
    store: bool = True  # the job opens the MLflow store: its lock waits are tracking.lock_wait_s
    inputs: Callable[..., Any] | None = None  # (config, args, overrides) -> the job's config, its data checked


COMMANDS = {
    "tune": Command(cmd_tune, backbone=True),
    "tune-worker": Command(cmd_tune_worker, backbone=True, check=check_tune_worker),
    "fetch-data": Command(cmd_fetch_data, tensorflow=False, store=False),
    "show-config": Command(cmd_show_config, tensorflow=False, store=False),
    "ui": Command(cmd_ui, tensorflow=False),
    "train-final": Command(cmd_train_final, backbone=True, inputs=search_inputs),
    "combine": Command(cmd_combine, check=check_combine, inputs=combine_inputs),
    "evaluate": Command(cmd_evaluate, inputs=model_inputs(_latest_model, ["test"])),
    "promote": Command(cmd_promote, tensorflow=False),
    "predict": Command(cmd_predict, check=check_predict),
    "serve": Command(cmd_serve, tensorflow=False),  # (an ONNX backend needs no TensorFlow: 0.6 GB less memory)
    "export-onnx": Command(cmd_export_onnx, inputs=model_inputs(_champion, ["validation"])),
}


def run_command(command: Command, args, overrides: list[str]) -> int:
    """Arguments, then the config (and the weights file), then the job's inputs, then TensorFlow,
    then the job: a mistake costs no wait."""
    from fashion_exp.config import load_config, weights_file

    if command.check is not None:
        command.check(args)
    config = load_config(overrides)
    if command.backbone and config.model.backbone == "xception":
        weights_file(config.model.weights)
    if command.store:
        from fashion_exp.tracking.store import limit_waits

        limit_waits(config.tracking.lock_wait_s)
    if command.inputs is not None:
        config = command.inputs(config, args, overrides)
    if command.tensorflow:
        from fashion_exp import quiet

        quiet.import_tensorflow()
    return command.run(config, args, overrides)


def _store_error(err: Exception) -> str | None:
    """One line for an error from the MLflow store, else None (MLflow is imported only if it ran)."""
    if "mlflow" not in sys.modules:
        return None
    from fashion_exp.tracking.store import store_error

    return store_error(err)


def main(argv: list[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if {"-v", "--verbose"} & set(words):  # anywhere on the line, before or after the command
        from fashion_exp import quiet

        quiet.configure(asked_verbose=True)
        words = [word for word in words if word not in ("-v", "--verbose")]
    parser = _parser()
    args, extra = parser.parse_known_args(words)  # words after a flag land in extra; flags may come anywhere
    if args.command is None:
        parser.print_help()
        return 2
    unknown = [word for word in extra if word.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    overrides, args.paths = _split(parser, args.overrides + extra, paths_allowed=args.command == "predict")
    screen.show()  # the job's lines (fashion_exp/screen.py) on stdout
    try:
        with signals.as_interrupts():
            return run_command(COMMANDS[args.command], args, overrides)
    except signals.Terminated:
        print("\nstopped by SIGTERM: run the same command again to resume where it stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        message = _store_error(err)
        if message is None:
            raise  # a bug: the traceback is for us
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130
