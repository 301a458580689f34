"""The vocabulary every command shares: `--model`, `--checkpoint`, `--model-kw`, `--method`, `--rules`.

    --model NAME --checkpoint FILE --model-kw img_size=384 norm_eps=1e-5
    --method libra_fullgrad_plus gradcam --rules vanilla libra

Mistakes in the user's input raise `UserError`: `libra_jax.cli.main` prints them as one line on
stderr and returns 2, without a traceback.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Sequence

from libra_jax.methods.names import resolve_methods
from libra_jax.rules import PRESETS
from libra_jax.text.checkpoints import checkpoint_kind, load_text_model
from libra_jax.trained import EMBEDDED, load_model  # the one place the commands reach the embedded models
from libra_jax.weights import embedded, hub


class UserError(Exception):
    """A problem with the command line or the files it names (exit code 2)."""


def _tuples(value: object) -> object:
    """JSON lists → tuples (model configs are hashable), recursively."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def model_kw(text: str) -> tuple[str, object]:
    """'key=value' → (key, value): the value as a JSON literal (3, 1e-5, [32, 32], false) or a Python one
    ((32, 32), False), lists as tuples; anything else is a string (act=quick_gelu)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, _tuples(json.loads(value))
    except ValueError:
        pass
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def add_model_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """--model (required unless `default`), --checkpoint, --model-kw KEY=VALUE ..."""
    default_help = f" (default {default})" if default else ""
    p.add_argument(
        "--model",
        required=default is None,
        default=default,
        help="timm name '<arch>[.<tag>]' (weights from the HF hub), 'hf-hub:org/repo', a libra-jax checkpoint file,"
        f" or an embedded model ({' / '.join(EMBEDDED + embedded.text_names())}){default_help}",
    )
    p.add_argument("--checkpoint", help="local weights for the named architecture (timm state dict or libra-jax file)")
    p.add_argument(
        "--model-kw",
        type=model_kw,
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor argument(s), values as JSON literals, e.g. img_size=384 norm_eps=1e-5; repeatable",
    )


def add_method_arguments(
    p: argparse.ArgumentParser, default: Sequence[str], rules: Sequence[str] | None = None
) -> None:
    """--method NAME ... and --rules PRESET ... (`libra_jax.methods.names.resolve_methods`)."""
    p.add_argument(
        "--method",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="attribution method(s): plain (gradcam), with the libra_ prefix (libra_gradcam) or an LRP preset"
        f" (attnlrp); repeatable (default: {' '.join(default)})",
    )
    p.set_defaults(default_methods=tuple(default))
    p.add_argument(
        "--rules",
        nargs="+",
        choices=sorted(PRESETS),
        metavar="PRESET",
        default=rules,
        help="run every plain method name under each of these rule presets; several presets name the maps"
        f" <preset>_<method> ({', '.join(sorted(PRESETS))}; default: "
        + (" ".join(rules) if rules else "the preset each name implies")
        + ")",
    )


def methods_from(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """The method table of --method / --rules: {output name: (method, preset)}."""
    try:
        return resolve_methods(args.method or args.default_methods, args.rules)
    except ValueError as e:
        raise UserError(str(e)) from None


KINDS = {
    "image": ("an image model", "--image FILE"),
    "text_classifier": ("a text classifier", "--text TEXT"),
    "decoder": ("a decoder language model", "--prompt TEXT"),
}
"""`Capabilities.kind` → (what it is, in words; the `explain` input it takes)."""


def model_from(args: argparse.Namespace):
    """(model, params, benchmark config or None) of --model / --checkpoint / --model-kw. A Hugging Face text
    checkpoint (a folder or 'org/name' repo whose config.json names a BERT-family or decoder model_type) loads
    through `libra_jax.text.checkpoints`; everything else through `libra_jax.load`."""
    try:
        if checkpoint_kind(args.model) is not None:
            if args.checkpoint or args.model_kw:
                raise UserError(
                    f"{args.model} is a Hugging Face text checkpoint, loaded as stored: drop --checkpoint / --model-kw"
                )
            return (*load_text_model(args.model), None)
        return load_model(args.model, args.checkpoint, **dict(args.model_kw))
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot load model {args.model!r}: {hub.cli_message(e)}") from None


def require_kind(model, name: str, kind: str, flag: str) -> None:
    """UserError unless `model` is of `kind` (`Capabilities.kind`): `flag` needs one, and the error names the
    input the model does take."""
    have = model.capabilities.kind
    if have != kind:
        what, usage = KINDS[have]
        raise UserError(f"{flag} explains {KINDS[kind][0]}, but {name!r} is {what}: explain it with {usage}")
