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
from libra_jax.evaluate import EvaluateOptions, evaluate_data
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


def is_decoder(model) -> bool:
    """A causal decoder LM, by its contract: a plain token sequence (no patch grid), no class token, explained at
    a query row."""
    caps = model.capabilities
    return model.layout.grid is None and not caps.class_token and caps.query_row is not None


def run_decoder(args: argparse.Namespace, model, params, task) -> int:
    """The decoder-task table (`libra_jax.evaluate_decoder`): --method (default: every decoder method under each of
    --rules, plus the IxG presets attnlrp / cp_lrp / decompx), --n prompts per task."""
    if args.data != "benchmark":
        raise UserError(f"a decoder LM is evaluated on the synthetic decoder tasks; drop --data {args.data}")
    try:
        rows = list(dict.fromkeys(resolve_methods(args.method or evaluate_decoder.METHODS, args.rules).values()))
        options = evaluate_decoder.DecoderEvalOptions(n=args.n, batch_size=args.batch, steps=args.steps)
        if args.method is None:
            rows += [row for row in evaluate_decoder.LRP_ROWS if row not in rows]
        result = evaluate_decoder.evaluate_decoder(model, params, rows, task, options)
    except ValueError as e:
        raise UserError(str(e)) from None
    columns, note = evaluate_decoder.COLUMNS, evaluate_decoder.table_note(result, args.n)
    methods, presets = list(dict.fromkeys(m for m, _ in rows)), list(dict.fromkeys(p for _, p in rows))
    meta = {"model": args.model, "data": "decoder tasks", "n": args.n, "methods": methods, "presets": presets}
    meta |= {"removal": result.removal, "seconds": round(result.seconds, 1)}
    print(report.format_table(result.results, columns=columns) + report.table_note(result.results) + note)
    for path in report.write_results(args.out, result.results, {}, meta, False, columns, note).values():
        print(f"wrote {path}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """`libra-jax evaluate`; the exit code."""
    model, params, bench = model_from(args)
    if is_decoder(model):
        return run_decoder(args, model, params, bench)
    rows = list(dict.fromkeys(methods_from(args).values()))
    try:
        options = EvaluateOptions(n=args.n, batch_size=args.batch, steps=args.steps, class_map=args.class_map)
    except ValueError as e:
        raise UserError(f"--n and --batch must be positive; got {args.n}, {args.batch}") from e
    result = evaluate_data(model, params, rows, args.data, options, bench)
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    methods, presets = list(dict.fromkeys(m for m, _ in rows)), list(dict.fromkeys(p for _, p in rows))
    meta = {"model": args.model, "data": args.data, "n": args.n, "methods": methods, "presets": presets}
    print(report.format_table(result.results) + report.table_note(result.results))
    for path in report.write_results(args.out, result.results, result.curves, meta, args.plot).values():
        print(f"wrote {path}", file=sys.stderr)
    return 0
