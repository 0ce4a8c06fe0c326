"""A first measurement of what fine-tuning costs on this machine, before a staged tune plans.

Where work_dir has no measured fine-tuning rate for this machine yet (search/costs.py RateBook),
the plan would fall back to a table by kind of host, which can be 2-3 times off (mixed bfloat16 on
AMX units trains block14 2.3 times faster than the table's AVX-512 row): the stage-2 size it
picks would be wrong. So the tune times the first batches of the work itself, at the shipped
size: the extraction of the cut on the runtime stage 2 will take (which also times the fp32
runtimes, runs auto's check of bf16 on a CPU with BF16 units, and exports the cut, as stage 2
would) and a fine-tuning epoch of the configured blocks under the train precision, on
finetune_stage.probe_photos training photos. One to three minutes, once per machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np

from fashion_exp.config import Config
from fashion_exp.data.dataset import TRAIN
from fashion_exp.data.images import Decoder
from fashion_exp.features.features import Features, Scan, choose_runtime
from fashion_exp.features.onnx_files import spread
from fashion_exp.head.fit import Batching, Rows, fit_on_views, training_views
from fashion_exp.head.model import HeadInputs, new_head
from fashion_exp.hyperparameters import HeadParams
from fashion_exp.screen import say
from fashion_exp.search.costs import extraction_rate, more_blocks


@dataclass(frozen=True)
class Probe:
    """What the first batches measured: images a second through the cut at 299px-equivalent,
    and one fine-tuning epoch's milliseconds per training photo at 299px for block14 alone."""

    cut_extract_per_s: float
    finetune_ms_per_image: float


def probe_finetuning(config: Config, scanned: Scan) -> Probe:
    """Time the first batches of stage 2's work at finetune_stage.image_size (see the module)."""
    stage = config.finetune_stage
    size, blocks = stage.image_size, min(stage.blocks)
    decoder = Decoder.for_data(config.data, size)
    runner = choose_runtime(scanned, config.model, decoder, config.work_dir, seed=config.seed, blocks=blocks)
    features = Features.on(scanned, runner, decoder, config.work_dir, config.model, config.seed)
    paths, labels = scanned.dataset.paths(TRAIN), np.asarray(scanned.dataset.labels(TRAIN))
    chosen = spread(len(paths), stage.probe_photos)
    say(f"Timing the first batches of fine-tuning at {size}px on {len(chosen)} photos (once on this machine) ...")
    images = np.stack([decoder.load(paths[i]) for i in chosen])
    runner, batch = features.extractor.runner, config.model.batch_size
    runner.features(images[:batch])  # (compiles outside the timing)
    started = time.perf_counter()
    maps = np.concatenate([runner.features(images[i : i + batch]) for i in range(0, len(images), batch)])
    extract = extraction_rate(len(images), time.perf_counter() - started, size, least=1)
    maps, targets = maps.astype(np.float16), labels[chosen]
    params = HeadParams(max(stage.learning_rate, default=0.001), 100, 0.2, "none", blocks, stage.block_lr[0])
    inputs = HeadInputs(maps.shape[1:], features.n_classes, config.tuner.batch_size, features.top, features.precision)
    head = new_head(inputs, params, config.seed, len(targets))
    rows, clock = Rows(training_views([maps]), targets, (maps[:1], targets[:1])), BatchClock()
    batching = Batching(config.tuner.batch_size, config.tuner.validation_batch_size, config.seed)
    fit_on_views(head, rows, batching, 1)  # tracing
    fit_on_views(head, rows, batching, 2, 1, [clock])
    per_image = 1000 * clock.seconds / len(targets)
    return Probe(extract, per_image / (size / 299) ** 2 / more_blocks(blocks))


class BatchClock(keras.callbacks.Callback):
    """The seconds from an epoch's first training batch to its last: the training steps alone (a
    probe's few photos would count an epoch's fixed costs, validation and callbacks, many times over)."""

    def __init__(self):
        super().__init__()
        self.first: float | None = None
        self.seconds = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        if self.first is None:
            self.first = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds = time.perf_counter() - self.first
