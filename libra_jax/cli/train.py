"""`libra-jax train`: train an embedded default model from scratch (`libra_jax.train.train`, text:
`libra_jax.text.train.train`).

libra-jax train --model swiglu --out synthetic_swiglu.safetensors --seed 0 [--steps N]
libra-jax train --model bert --out synthetic_bert.safetensors --seed 0   (tokenizer: `--tokenizer-out`)
"""

from __future__ import annotations

import argparse
import json

from libra_jax.cli.options import UserError
from libra_jax.text import train as text_train
from libra_jax.train import MODEL_NAMES, Recipe, train

HELP = "train a small model on a synthetic benchmark (reproduces the embedded checkpoints)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, choices=(*MODEL_NAMES, text_train.MODEL_NAME), help="architecture to train"
    )
    parser.add_argument("--out", required=True, help="output checkpoint (libra-jax .safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="parameter-init seed (default 0)")
    parser.add_argument(
        "--steps",
        type=int,
        help=f"training steps (default {Recipe.steps}; {text_train.MODEL_NAME}: {text_train.TextRecipe.steps})",
    )
    parser.add_argument(
        "--tokenizer-out", help=f"{text_train.MODEL_NAME} only: also write the benchmark's tokenizer.json here"
    )


def run(args: argparse.Namespace) -> int:
    """`libra-jax train`: train, save, and print the result as JSON; the exit code."""
    if args.model == text_train.MODEL_NAME:
        result = text_train.train(seed=args.seed, steps=args.steps, out=args.out, tokenizer_out=args.tokenizer_out)
    elif args.tokenizer_out is not None:
        raise UserError(f"--tokenizer-out is for --model {text_train.MODEL_NAME} (image models have no tokenizer)")
    else:
        result = train(args.model, seed=args.seed, steps=args.steps, out=args.out)
    print(json.dumps(result))
    return 0
