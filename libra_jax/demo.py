"""The main job on an embedded default model, offline, in a few minutes on 2 cores (`libra-jax demo`).

    from libra_jax.demo import DemoOptions, demo
    grid, evaluation = demo(model, params, benchmark, DemoOptions(n=100))

Explains a few synthetic benchmark images with several methods, vanilla and LibraGrad side by
side, as a PNG grid (image, ground-truth mask, one map per method × preset), and evaluates them
(faithfulness, segmentation, class discrimination, completeness) on a small n.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax import viz
from libra_jax.data import synthetic
from libra_jax.evaluate import EvaluateOptions, Evaluation, evaluate_data, supported_methods
from libra_jax.methods import api
from libra_jax.preprocess import normalise

DEMO_METHODS = ("ixg", "fullgrad", "fullgrad_plus", "gradcam", "genatt")
DEMO_PRESETS = ("vanilla", "libra")


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """images: rows of the PNG grid; n: images (and two-object images) of the evaluation."""

    images: int = 4
    n: int = 200

    def __post_init__(self):
        if self.images <= 0 or self.n <= 0:
            raise ValueError(f"images and n must be positive; got {self.images}, {self.n}")


def explanation_grid(model, params, data: dict, methods, presets, names) -> np.ndarray:
    """uint8 grid: per image a row [image, mask, method/preset overlays...]."""
    x = jnp.asarray(normalise(data["images"], model.data_config))
    labels = jnp.asarray(data["labels"])
    probs = jax.nn.softmax(model.apply({"params": params}, x)[0], -1)
    maps = {p: jax.jit(api.attribution(model, list(methods), rules=p))(params, x, labels) for p in presets}
    rows, captions = [], []
    for i, image in enumerate(data["images"]):
        mask = np.where(data["masks"][i][..., None], image, (image * 0.25).astype(np.uint8))
        row, cap = [image, mask], [f"{names[int(labels[i])]} p={float(probs[i, labels[i]]):.2f}", "object mask"]
        for m in methods:
            for p in presets:
                row.append(viz.overlay(image, np.asarray(maps[p][m][i]), alpha=0.6))
                cap.append(f"{m} / {p}")
        rows.append([_enlarge(panel) for panel in row])
        captions.append(cap)
    return viz.grid(rows, captions)


def _enlarge(panel: np.ndarray, size: int = 128) -> np.ndarray:
    """Nearest-neighbour enlargement of a small uint8 panel, so 64 px images are legible."""
    reps = max(1, size // panel.shape[0])
    return np.repeat(np.repeat(panel, reps, axis=0), reps, axis=1)


def demo(
    model, params, benchmark: synthetic.BenchmarkConfig | None = None, options: DemoOptions = DemoOptions()
) -> tuple[np.ndarray, Evaluation]:
    """(uint8 explanation grid (H, W, 3), evaluation of every demo method × preset) for a benchmark model.

    benchmark: the one the model was trained on (default `BenchmarkConfig()`, the embedded models').
    """
    bench = benchmark or synthetic.BenchmarkConfig()
    data = synthetic.make_split(bench, "test", options.images)
    methods = supported_methods(model, DEMO_METHODS)
    grid = explanation_grid(model, params, data, methods, DEMO_PRESETS, synthetic.class_names(bench))
    rows = [(m, p) for m in methods for p in DEMO_PRESETS]
    evaluation = evaluate_data(model, params, rows, "benchmark", EvaluateOptions(options.n, min(100, options.n)), bench)
    return grid, evaluation
