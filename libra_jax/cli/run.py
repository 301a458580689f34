"""`libra-jax run`: attribute a whole dataset into resumable shards + a manifest (`libra_jax.run.run_dataset`).

    libra-jax run --model synthetic_vit --data benchmark:test --method libra_fullgrad_plus genatt --out runs/bench

Output layout, manifest schema and the multi-process flags: docs/run.md.
"""

from __future__ import annotations

import argparse
import sys

import jax

from libra_jax.cli.options import add_method_arguments, add_model_arguments, methods_from, model_from
from libra_jax.data.sources import open_source
from libra_jax.run import RunOptions, distributed, run_dataset
from libra_jax.run.step import TARGETS

HELP = "attribute a whole dataset with several methods into resumable .npz shards + a manifest (multi-device)"


def target_arg(text: str) -> str | int:
    """'top1' | 'label' | a class index."""
    if text in TARGETS:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected top1, label or a class index, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, default="synthetic_vit")
    p.add_argument(
        "--data",
        required=True,
        help="folder:PATH, list:FILE ('PATH [LABEL]' per line), imagenet:PATH, imagenet-s:PATH, imagenet-seg:PATH,"
        " benchmark[:SPLIT], or an existing folder / list file",
    )
    add_method_arguments(p, ["libra_fullgrad_plus"])
    p.add_argument("--target", type=target_arg, default="top1", help="class explained: top1, label or an index")
    p.add_argument("--out", required=True, help="output folder (shards/, manifest.json); rerun to resume")
    p.add_argument("--batch", type=int, default=64, help="images per batch, over all devices (default 64)")
    p.add_argument("--shard-size", type=int, help="images per shard file, a multiple of --batch (default 16 batches)")
    p.add_argument("--limit", type=int, help="only the first N images (the benchmark's size; default 1000 there)")
    p.add_argument("--prefetch", type=int, default=2, help="batches decoded ahead on a background thread (0: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--class-map", help="imagenet-s: ImageNet-S id → ImageNet-1k index JSON file")
    group = p.add_argument_group("several processes (hosts): run the same command once per process")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, help="number of processes")
    group.add_argument("--process-id", type=int, help="this process's id, 0..num-processes-1")


def run(args: argparse.Namespace) -> int:
    """`libra-jax run`: attribute a whole dataset into shards + manifest (resumable); the exit code."""
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)  # before any device use
    methods = methods_from(args)
    options = RunOptions(
        batch_size=args.batch,
        shard_size=args.shard_size or 16 * args.batch,
        target=args.target,
        limit=args.limit,
        prefetch=args.prefetch,
        progress=not args.no_progress,
    )
    model, params, bench = model_from(args)
    kwargs = {"class_map": args.class_map} if args.class_map else {}
    dataset = open_source(args.data, model.data_config, bench, size=args.limit or 1000, **kwargs)
    provenance = {"model": args.model, "checkpoint": args.checkpoint, "data": args.data}
    manifest = run_dataset(model, params, dataset, methods, args.out, options, provenance=provenance)
    if jax.process_index() == 0:
        print(f"attributed {manifest['num_attributed']} images with {', '.join(methods)}: {args.out}/manifest.json")
        for entry in manifest["skipped"]:
            print(f"skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
    return 0
