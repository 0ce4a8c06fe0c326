"""What loading the config costs in one process: CPU seconds a call of load_config() with
Hydra's whole composition every time (how it composed before 2026-12-07), and with the config
groups' composition kept (compose() now: plain key=value overrides set on a copy), over the same
override lists: the ones commands and tests load again and again (a few group choices, many values).

    python benchmarks/bench_config.py --rounds 3    # seconds
"""

from __future__ import annotations

import argparse
import time

from omegaconf import OmegaConf

from fashion_exp import config
from fashion_exp.errors import ConfigError

OVERRIDE_LISTS = [
    [],
    ["tuner.epochs=3"],
    ["model=tiny", "data.image_size=32", "tuner.max_trials=2", "tuner.epochs=3", "tuner.batch_size=8"],
    ["model=tiny", "data.image_size=32", "final.image_size=32", "final.epochs=3", "final.restarts=1"],
    ["preset=best", "tuner.max_minutes=90"],
    ["search=finetune", "search.blocks.values=[1]", "search.block_lr.values=[0.1]"],
    ["tuner.patience=0"],  # (refused: a ConfigError)
    ["serve.max_requests=0"],
    ["data.image_size=150", "search.learning_rate.values=[0.001]", "search.size_inner.values=[0,100]"],
    ["+experiment=cv_search", "tuner.epochs=3"],
]


def whole(overrides: list[str]):
    """load_config() as it was: Hydra composes everything, then the schema and the checks."""
    raw = config._hydra_compose(config.CONFIG_DIR.resolve(), [config._added_group(o) for o in overrides])
    typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config.Config), raw))
    typed.check()
    return typed


def seconds_a_call(load, rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        for overrides in OVERRIDE_LISTS:
            try:
                load(overrides)
            except ConfigError:  # (the bad values test_config.py feeds it are refused the same way)
                pass
    return (time.process_time() - started) / (rounds * len(OVERRIDE_LISTS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="times each override list is loaded")
    rounds = parser.parse_args().rounds
    config.load_config([])  # imports, the generated nodes, Hydra's plugins: not part of either figure
    rows = [("whole composition every call", seconds_a_call(whole, rounds))]
    rows.append(("groups' composition kept (load_config)", seconds_a_call(config.load_config, rounds)))
    print(f"{len(OVERRIDE_LISTS)} override lists x {rounds} rounds, CPU seconds a load_config call")
    print(f"{'composition':<42} {'CPU s/call':>10} {'ratio':>6}")
    for name, cpu in rows:
        print(f"{name:<42} {cpu:>10.4f} {cpu / rows[0][1]:>6.2f}")


if __name__ == "__main__":
    main()
