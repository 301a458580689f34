"""The model a command names — an embedded one (`libra_jax.weights.embedded`), a timm / hub name or a
checkpoint file — together with the benchmark it was trained on, when its libra-jax file records one.
"""

from __future__ import annotations

import json

from libra_jax.data import synthetic, text_synthetic
from libra_jax.weights import embedded
from libra_jax.weights.formats import is_libra_checkpoint, read_libra_checkpoint
from libra_jax.weights.loading import load

EMBEDDED = embedded.names()
"""Names of the embedded default models."""

BENCHMARKS = {
    "libra_jax.train": synthetic.BenchmarkConfig,
    "libra_jax.text.train": text_synthetic.TextBenchmarkConfig,
    "libra_jax.text.train_decoder": text_synthetic.DecoderTaskConfig,
}
"""A checkpoint's recorded trainer ('trained_with') → the config class of the benchmark it was trained on."""


def load_model(name: str, checkpoint: str | None = None, **model_kw):
    """(model, params, benchmark config or None): embedded names resolve to the shipped checkpoints.

    The benchmark config is the one a libra-jax checkpoint written by `libra_jax.train`, `libra_jax.text.train` or
    `libra_jax.text.train_decoder` records (the images, sentences or decoder tasks it was trained on: a
    `BenchmarkConfig`, `TextBenchmarkConfig` or `DecoderTaskConfig`);
    `model_kw` are `libra_jax.load`'s model overrides.
    """
    path = str(embedded.path(name)) if name in EMBEDDED + embedded.text_names() else name
    model, params = load(path, checkpoint, **model_kw)
    bench = None
    if checkpoint is None and is_libra_checkpoint(path):
        try:
            record = json.loads(read_libra_checkpoint(path).source)
        except (json.JSONDecodeError, TypeError):
            record = None
        if isinstance(record, dict) and "benchmark" in record:
            bench = BENCHMARKS.get(record.get("trained_with"), synthetic.BenchmarkConfig)(**record["benchmark"])
    return model, params, bench
