"""`libra-jax evaluate`: the method × preset table of `libra_jax.evaluate.evaluate_data` (images) or
`libra_jax.evaluate_decoder.evaluate_decoder` (a decoder LM on the synthetic decoder tasks), printed and written.

libra-jax evaluate --model synthetic_vit --method ixg fullgrad --rules vanilla libra --n 200 --plot
libra-jax evaluate --model synthetic_decoder --n 500        (every decoder method, vanilla and libra, + LRP presets)
"""

from __future__ import annotations

import argparse
import sys

from libra_jax import evaluate_decoder, report
from libra_jax.cli.options import UserError, add_method_arguments, add_model_arguments, methods_from, model_from
from libra_jax.evaluate import COLUMNS, EvaluateOptions, evaluate_data
from libra_jax.methods.names import resolve_methods

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
    p.add_argument(
        "--n",
        type=int,
        default=1000,
        help="number of images (and of two-object images on the benchmark); for a decoder, prompts per task",
    )
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=None, help="IG steps (default 50)")
    p.add_argument("--out", default="outputs/evaluate", help="folder for results.md / .csv / .json (and curves.png)")
    p.add_argument("--plot", action="store_true", help="also write the deletion curves as curves.png")
    p.add_argument(
        "--class-map",
        default=None,
        help="imagenet-s: ImageNet-S id → ImageNet-1k index, as a JSON file {id: index} (see libra_jax.data.imagenet)",
    )


def model_kind(model) -> str:
    """Which evaluation a model gets, from its contract: 'decoder' (a causal LM: a token sequence without a class
    token, explained at a query row) or 'image'."""
    caps = model.capabilities
    if model.layout.grid is None and not caps.class_token and caps.query_row is not None:
        return "decoder"
    return "image"


def _image(args: argparse.Namespace, model, params, bench):
    """(rows, results, curves, columns, note, metadata) of an image model on --data."""
    rows = list(dict.fromkeys(methods_from(args).values()))
    try:
        options = EvaluateOptions(n=args.n, batch_size=args.batch, steps=args.steps, class_map=args.class_map)
    except ValueError as e:
        raise UserError(f"--n and --batch must be positive; got {args.n}, {args.batch}") from e
    result = evaluate_data(model, params, rows, args.data, options, bench)
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return rows, result.results, result.curves, COLUMNS, "", {"data": args.data}


def _decoder(args: argparse.Namespace, model, params, task):
    """(rows, results, curves, columns, note, metadata) of a decoder LM on the synthetic decoder tasks
    (`libra_jax.evaluate_decoder`): --method (default: every decoder method under each of --rules, plus the IxG
    presets attnlrp / cp_lrp / decompx), --n prompts per task."""
    if args.data != "benchmark":
        raise UserError(f"a decoder LM is evaluated on the synthetic decoder tasks; drop --data {args.data}")
    if args.plot:
        raise UserError("--plot draws the image MIF / LIF curves; the decoder table has none (drop --plot)")
    try:
        rows = list(dict.fromkeys(resolve_methods(args.method or evaluate_decoder.METHODS, args.rules).values()))
        if args.method is None:
            rows += [row for row in evaluate_decoder.LRP_ROWS if row not in rows]
        options = evaluate_decoder.DecoderEvalOptions(n=args.n, batch_size=args.batch, steps=args.steps)
        result = evaluate_decoder.evaluate_decoder(model, params, rows, task, options)
    except ValueError as e:
        raise UserError(str(e)) from None
    note = evaluate_decoder.table_note(result, args.n)
    meta = {"data": "decoder tasks", "removal": result.removal, "seconds": round(result.seconds, 1)}
    return rows, result.results, result.curves, evaluate_decoder.COLUMNS, note, meta


EVALUATIONS = {"image": _image, "decoder": _decoder}
"""model kind (`model_kind`) → its evaluation."""


def run(args: argparse.Namespace) -> int:
    """`libra-jax evaluate`; the exit code."""
    model, params, bench = model_from(args)
    rows, results, curves, columns, note, extra = EVALUATIONS[model_kind(model)](args, model, params, bench)
    methods, presets = list(dict.fromkeys(m for m, _ in rows)), list(dict.fromkeys(p for _, p in rows))
    meta = {"model": args.model, "data": args.data, "n": args.n, "methods": methods, "presets": presets} | extra
    print(report.format_table(results, columns=columns) + report.table_note(results) + note)
    for path in report.write_results(args.out, results, curves, meta, args.plot, columns, note).values():
        print(f"wrote {path}", file=sys.stderr)
    return 0
