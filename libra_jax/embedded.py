"""The embedded default models (trained on the synthetic benchmark, shipped in libra_jax/assets/) and the
model a command names: `load_model("synthetic_vit")`, a timm name or a checkpoint file.
"""

from __future__ import annotations

import json

from libra_jax.data import synthetic
from libra_jax.loading import load
from libra_jax.serialization import is_libra_checkpoint, read_libra_checkpoint
from libra_jax.train import asset_path

EMBEDDED = ("synthetic_vit", "synthetic_swiglu")
"""Names of the embedded default models."""


def model_path(name: str) -> str:
    """An embedded model's name → its shipped checkpoint file; any other name unchanged."""
    return str(asset_path(name.removeprefix("synthetic_"))) if name in EMBEDDED else name


def load_model(name: str, checkpoint: str | None = None, **model_kw):
    """(model, params, benchmark config or None): embedded names resolve to the shipped checkpoints.

    The benchmark config is the one a libra-jax checkpoint written by `libra_jax.train` records (the
    images it was trained on); `model_kw` are `libra_jax.load`'s model overrides.
    """
    path = model_path(name)
    model, params = load(path, checkpoint, **model_kw)
    bench = None
    if checkpoint is None and is_libra_checkpoint(path):
        try:
            record = json.loads(read_libra_checkpoint(path).source)
        except (json.JSONDecodeError, TypeError):
            record = None
        if isinstance(record, dict) and "benchmark" in record:
            bench = synthetic.BenchmarkConfig(**record["benchmark"])
    return model, params, bench
