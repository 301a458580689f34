"""`libra-jax evaluate`: the method × preset table of `libra_jax.evaluate.evaluate_data`, printed and written.

libra-jax evaluate --model synthetic_vit --method ixg fullgrad --rules vanilla libra --n 200 --plot
"""

from __future__ import annotations

import argparse
import sys

from libra_jax import report
from libra_jax.cli.options import UserError, add_method_arguments, add_model_arguments, methods_from, model_from
from libra_jax.evaluate import EvaluateOptions, evaluate_data

HELP = "method × preset table: faithfulness, segmentation, class discrimination, completeness"

DEFAULT_METHODS = (
    "ixg",
    "fullgrad",
    "fullgrad_plus",
    "hirescam",
    "gradcam",
    "xgradcam_plus",
    "genatt",
    "rollout",
)
"""Single-pass methods only, so the default table costs one forward + backward per preset (add `ig` by name)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, default="synthetic_vit")
    p.add_argument(
        "--data",
        default="benchmark",
        help="benchmark (synthetic test split + two-object pairs), imagenet:PATH, imagenet-s:PATH, imagenet-seg:PATH",
    )
    add_method_arguments(p, DEFAULT_METHODS, rules=("vanilla", "libra"))
    p.add_argument("--n", type=int, default=1000, help="number of images (and of two-object images on the benchmark)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=None, help="IG steps (default 50)")
    p.add_argument("--out", default="outputs/evaluate", help="folder for results.md / .csv / .json (and curves.png)")
    p.add_argument("--plot", action="store_true", help="also write the deletion curves as curves.png")
    p.add_argument(
        "--class-map",
        default=None,
        help="imagenet-s: ImageNet-S id → ImageNet-1k index, as a JSON file {id: index} (see libra_jax.data.imagenet)",
    )


def run(args: argparse.Namespace) -> int:
    """`libra-jax evaluate`; the exit code."""
    rows = list(dict.fromkeys(methods_from(args).values()))
    try:
        options = EvaluateOptions(n=args.n, batch_size=args.batch, steps=args.steps, class_map=args.class_map)
    except ValueError as e:
        raise UserError(f"--n and --batch must be positive; got {args.n}, {args.batch}") from e
    model, params, bench = model_from(args)
    result = evaluate_data(model, params, rows, args.data, options, bench)
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    methods, presets = list(dict.fromkeys(m for m, _ in rows)), list(dict.fromkeys(p for _, p in rows))
    meta = {"model": args.model, "data": args.data, "n": args.n, "methods": methods, "presets": presets}
    print(report.format_table(result.results) + report.table_note(result.results))
    for path in report.write_results(args.out, result.results, result.curves, meta, args.plot).values():
        print(f"wrote {path}", file=sys.stderr)
    return 0
