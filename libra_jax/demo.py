"""`libra-jax demo`: the main job on the embedded default model, offline, in a few minutes on 2 cores.

Explains a few synthetic benchmark images with several methods, vanilla and LibraGrad side by
side, writes a PNG grid (image, ground-truth mask, one map per method × preset), and prints the
evaluation table (faithfulness, segmentation, class discrimination, completeness) for a small n.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from libra_jax import evaluate, viz
from libra_jax.data import synthetic
from libra_jax.methods import api
from libra_jax.preprocess import normalise

DEMO_METHODS = ("ixg", "fullgrad", "fullgrad_plus", "gradcam", "genatt")
DEMO_PRESETS = ("vanilla", "libra")


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="synthetic_vit", choices=evaluate.EMBEDDED, help="embedded model to explain")
    p.add_argument("--images", type=int, default=4, help="images in the PNG grid")
    p.add_argument("--n", type=int, default=200, help="images (and two-object images) in the metrics table")
    p.add_argument("--out", default="outputs/demo", help="output folder (grid.png, results.*)")


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


def run_demo(args: argparse.Namespace) -> int:
    model, params, bench = evaluate.load_model(args.model)
    bench = bench or synthetic.BenchmarkConfig()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = synthetic.class_names(bench)
    data = synthetic.make_split(bench, "test", args.images)
    methods = evaluate.supported_methods(model, DEMO_METHODS)
    viz.save_png(out / "grid.png", explanation_grid(model, params, data, methods, DEMO_PRESETS, names))
    print(f"wrote {out / 'grid.png'}", file=sys.stderr)
    batch = min(100, args.n)
    results, curves = evaluate.evaluate(
        model,
        params,
        methods,
        DEMO_PRESETS,
        lambda: evaluate.benchmark_batches(bench, "test", args.n, batch),
        args.n,
        pair_batches=lambda: evaluate.benchmark_batches(bench, "pairs", args.n, batch),
        n_pairs=args.n,
    )
    print(f"\n{args.model} on {args.n} synthetic test images (+{args.n} two-object images):\n")
    print(evaluate.format_table(results) + evaluate.table_note(results))
    meta = {"model": args.model, "data": "benchmark", "n": args.n, "methods": methods, "presets": list(DEMO_PRESETS)}
    for path in evaluate.write_results(out, results, curves, meta, plot=True).values():
        print(f"wrote {path}", file=sys.stderr)
    return 0
