"""`libra-jax train`: train an embedded default model from scratch (`libra_jax.train.train`).

libra-jax train --model swiglu --out synthetic_swiglu.safetensors --seed 0 [--steps N]
"""

from __future__ import annotations

import argparse
import json

from libra_jax.train import MODEL_NAMES, Recipe, train

HELP = "train a small model on the synthetic benchmark (reproduces the embedded checkpoints)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=MODEL_NAMES, help="architecture to train")
    parser.add_argument("--out", required=True, help="output checkpoint (libra-jax .safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="parameter-init seed (default 0)")
    parser.add_argument("--steps", type=int, help=f"training steps (default {Recipe.steps})")


def run(args: argparse.Namespace) -> int:
    """`libra-jax train`: train, save, and print the result as JSON; the exit code."""
    result = train(args.model, seed=args.seed, steps=args.steps, out=args.out)
    print(json.dumps(result))
    return 0
