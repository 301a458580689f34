"""`libra-jax explain`: one command for images, text classifiers and decoder LMs; the input flag picks the module.

    libra-jax explain --model synthetic_vit --image shapes.png                          # cli/explain.py
    libra-jax explain --model synthetic_bert --text "the referee saw the goal"          # cli/explain_text.py
    libra-jax explain --model ./tiny-llama --prompt "The capital of France is" --generate 3   # cli/explain_decoder.py

`--prompt` with `--image` is an image–text model's text prompt (CLIP / SigLIP); without an image, a decoder's
prompt. Each module checks that the loaded model is of its kind (`Capabilities.kind`) and otherwise names the
input flag the model takes.
"""

from __future__ import annotations

import argparse

from libra_jax.cli import explain, explain_decoder, explain_text
from libra_jax.cli.options import UserError

HELP = "explain a prediction: images (heat-map PNG), text classifiers and decoder LMs (coloured text + an HTML page)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    explain.add_arguments(p)
    explain_text.add_arguments(p)
    explain_decoder.add_arguments(p)


def output_path(args: argparse.Namespace) -> str:
    """--out, or the default of the input kind: heat.png for images, explain.html for text."""
    return args.out or ("heat.png" if args.image else "explain.html")


def run(args: argparse.Namespace) -> int:
    """Dispatch on --image / --text / --prompt; the exit code."""
    args = argparse.Namespace(**{**vars(args), "out": output_path(args)})
    decoder_flags = [flag for flag, value in explain_decoder.flags(args).items() if value is not None]
    if decoder_flags and (args.image or args.text or not args.prompt):
        raise UserError(f"{' / '.join(decoder_flags)} explain a decoder's --prompt (without --image or --text)")
    if args.text:
        if args.image or args.prompt:
            raise UserError("--text explains a text classifier's input: drop --image / --prompt")
        return explain_text.run(args)
    if args.image:
        return explain.run(args)
    if args.prompt:
        return explain_decoder.run(args)
    raise UserError(
        "nothing to explain: pass --image FILE (image models), --text TEXT (text classifiers) or --prompt TEXT"
        " (decoder language models)"
    )
