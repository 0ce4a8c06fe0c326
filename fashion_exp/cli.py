"""Command line: parse arguments, turn leftover key=value words into Hydra overrides, dispatch.

Heavy imports (TensorFlow, MLflow) happen inside the commands so that --help answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashion_exp.config import CONFIG_DIR
from fashion_exp.errors import UserError

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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    epilog = _groups(CONFIG_DIR) + "\n\n" + EXAMPLES if CONFIG_DIR.is_dir() else EXAMPLES

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

    command("tune", "search head hyperparameters with keras-tuner, tracked in MLflow (resumes by default)")
    fetch = command("fetch-data", "download clothing-dataset-small to data.root")
    fetch.add_argument("--force", action="store_true", help="download again even if the data is there")
    command("show-config", "print the resolved config")
    return parser


def _split(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    for word in words:
        if "=" not in word:
            parser.error(f"'{word}' is not a key=value override")
    return words


def cmd_tune(overrides: list[str]) -> int:
    from fashion_exp.config import load_config
    from fashion_exp.search import run_search

    config = load_config(overrides)
    result = run_search(config)
    if result.best_trial_id is None:
        print(f"No trial completed. Parent run {result.parent_run_id} holds the errors.")
        return 1
    print(f"\nBest trial {result.best_trial_id}: val_accuracy {result.best_score:.4f}")
    for key, value in result.best_hyperparameters.items():
        print(f"  {key} = {value}")
    print(f"MLflow parent run {result.parent_run_id} ({result.trials} trials) in {result.tracking_uri}")
    print("Compare the trials: mlflow ui   (then open http://127.0.0.1:5000)")
    return 0


def cmd_fetch_data(overrides: list[str], force: bool) -> int:
    from fashion_exp.config import load_config
    from fashion_exp.download import fetch_dataset, has_dataset

    config = load_config(overrides)
    root = Path(config.data.root)
    if has_dataset(root) and not force:
        print(f"Dataset already at {root.resolve()} (use --force to download again)")
        return 0
    fetch_dataset(config.data.url, root, force=force)
    print(f"Dataset ready at {root.resolve()}")
    return 0


def cmd_show_config(overrides: list[str]) -> int:
    from fashion_exp.config import load_config, to_yaml

    print(to_yaml(load_config(overrides)), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    overrides = _split(parser, args.overrides)
    try:
        if args.command == "tune":
            return cmd_tune(overrides)
        if args.command == "fetch-data":
            return cmd_fetch_data(overrides, args.force)
        if args.command == "show-config":
            return cmd_show_config(overrides)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2
