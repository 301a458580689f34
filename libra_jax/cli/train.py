"""`libra-jax train`: train an embedded default model from scratch (the shared driver libra_jax/train_driver.py,
through `libra_jax.train.train` for images, `libra_jax.text.train.train` for the BERT classifier and
`libra_jax.text.train_decoder.train` for the decoder LM).

libra-jax train --model swiglu --out synthetic_swiglu.safetensors --seed 0 [--steps N]
libra-jax train --model bert --out synthetic_bert.safetensors --seed 0   (tokenizer: `--tokenizer-out`)
libra-jax train --model decoder --out synthetic_decoder.safetensors --tokenizer-out synthetic_decoder_tokenizer.json
"""

from __future__ import annotations

import argparse
import functools
import json

from libra_jax.cli.options import UserError
from libra_jax.text import train as text_train
from libra_jax.text import train_decoder
from libra_jax.train import MODEL_NAMES, Recipe, train

HELP = "train a small model on a synthetic benchmark (reproduces the embedded checkpoints)"

TEXT_MODELS = {
    text_train.MODEL_NAME: (text_train.train, text_train.TextRecipe.steps),
    train_decoder.MODEL_NAME: (train_decoder.train, train_decoder.DecoderRecipe.steps),
}
"""Text models: --model name → (train function, default steps); they also write a tokenizer.json."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=(*MODEL_NAMES, *TEXT_MODELS), help="architecture to train")
    parser.add_argument("--out", required=True, help="output checkpoint (libra-jax .safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="parameter-init seed (default 0)")
    defaults = "; ".join(f"{name}: {steps}" for name, (_, steps) in TEXT_MODELS.items())
    parser.add_argument("--steps", type=int, help=f"training steps (default {Recipe.steps}; {defaults})")
    parser.add_argument(
        "--tokenizer-out", help=f"{' or '.join(TEXT_MODELS)} only: also write the benchmark's tokenizer.json here"
    )


def run(args: argparse.Namespace) -> int:
    """`libra-jax train`: train, save, and print the result as JSON; the exit code."""
    if args.model in TEXT_MODELS:
        fn = functools.partial(TEXT_MODELS[args.model][0], tokenizer_out=args.tokenizer_out)
    elif args.tokenizer_out is not None:
        raise UserError(f"--tokenizer-out is for --model {' or '.join(TEXT_MODELS)} (image models have no tokenizer)")
    else:
        fn = functools.partial(train, args.model)
    print(json.dumps(fn(seed=args.seed, steps=args.steps, out=args.out)))
    return 0
