"""Convert a timm checkpoint to a libra-jax checkpoint (`.safetensors` with config metadata).

    python convert/timm_to_flax.py vit_base_patch16_224.augreg2_in21k_ft_in1k -o vit_b16.safetensors
    python convert/timm_to_flax.py deit3.pth --model deit3_small_patch16_224 -o deit3.safetensors \
        --kw num_classes=10 --kw img_size=112 --no-strict

The output loads with `libra_jax.load("vit_b16.safetensors")`. Values of --kw are JSON when they
parse as JSON (numbers, lists, true/false), else strings.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import jax

from libra_jax.weights.formats import CheckpointFileError, save_checkpoint
from libra_jax.weights.hub import HubError
from libra_jax.weights.keymap import CheckpointMismatchError, flatten
from libra_jax.weights.loading import load
from libra_jax.weights.registry import UnknownModelError


def parse_kw(items: list[str]) -> dict:
    """['depth=4', 'act_layer=quick_gelu'] → {'depth': 4, 'act_layer': 'quick_gelu'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--kw expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="timm model name / hf-hub:org/repo, or a timm checkpoint file (with --model)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output .safetensors file")
    parser.add_argument("--model", help="timm architecture of a checkpoint file")
    parser.add_argument("--no-strict", action="store_true", help="drop checkpoint keys the model does not use")
    parser.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="model kwarg (repeatable)")
    args = parser.parse_args(argv)

    kwargs = parse_kw(args.kw)
    if args.model:
        name, checkpoint = args.model, args.source
    elif Path(args.source).is_file():
        parser.error("a checkpoint file needs --model <timm architecture>")
    else:
        name, checkpoint = args.source, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model, params = load(name, checkpoint, strict=not args.no_strict, **kwargs)
        except CheckpointMismatchError as e:
            hint = "--no-strict drops unexpected keys; missing or misshapen keys need the right --model / --kw"
            print(f"{e}\n({hint})", file=sys.stderr)
            return 1
        except (HubError, UnknownModelError, CheckpointFileError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    leaves = flatten(params)
    n_values = sum(v.size for v in jax.tree.leaves(params))
    print(f"loaded {len(leaves)} tensors ({n_values:,} values) from {checkpoint or name}")
    for w in caught:
        print(f"  note: {w.message}")
    save_checkpoint(args.output, model, params, source=str(checkpoint or name))
    print(
        f"wrote {args.output}  ({model.config.depth} blocks, embed_dim {model.config.embed_dim},"
        f" {model.config.num_classes} classes, input {model.data_config.input_size})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
