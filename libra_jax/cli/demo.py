"""`libra-jax demo`: `libra_jax.demo.demo` on an embedded model, its grid and tables written to a folder."""

from __future__ import annotations

import argparse
import pathlib
import sys

from libra_jax import report, viz
from libra_jax.cli.options import EMBEDDED, model_from
from libra_jax.demo import DEMO_PRESETS, DemoOptions, demo

HELP = "explain synthetic benchmark images with the embedded default model and print the metrics table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="synthetic_vit", choices=EMBEDDED, help="embedded model to explain")
    p.add_argument("--images", type=int, default=4, help="images in the PNG grid")
    p.add_argument("--n", type=int, default=200, help="images (and two-object images) in the metrics table")
    p.add_argument("--out", default="outputs/demo", help="output folder (grid.png, results.*)")
    p.set_defaults(checkpoint=None, model_kw=[])


def run(args: argparse.Namespace) -> int:
    """`libra-jax demo`; the exit code."""
    options = DemoOptions(images=args.images, n=args.n)
    model, params, bench = model_from(args)
    grid, result = demo(model, params, bench, options)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viz.save_png(out / "grid.png", grid)
    print(f"wrote {out / 'grid.png'}", file=sys.stderr)
    print(f"\n{args.model} on {args.n} synthetic test images (+{args.n} two-object images):\n")
    print(report.format_table(result.results) + report.table_note(result.results))
    methods = list(dict.fromkeys(m for m, _ in result.results))
    meta = {"model": args.model, "data": "benchmark", "n": args.n, "methods": methods, "presets": list(DEMO_PRESETS)}
    for path in report.write_results(out, result.results, result.curves, meta, plot=True).values():
        print(f"wrote {path}", file=sys.stderr)
    return 0
