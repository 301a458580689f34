"""`libra-jax explain --prompt` on a decoder LM: which prompt tokens made the model say this.

    libra-jax explain --model ./tiny-llama --prompt "The capital of France is" --generate 3
    libra-jax explain --model ./tiny-llama --prompt "The capital of France is" --continuation " Paris"
    libra-jax explain --model ./tiny-llama --prompt "The capital of France is" --target-token " Paris" \\
        [--contrast " Lyon"]

--generate N (default 1: the predicted next token) and --continuation explain each continuation token over
every earlier token (`text.explain_generation`: one forward, the backward vmapped over the tokens); the
terminal shows, per token and method, its context coloured; the HTML page has one row per token and method,
the token in bold after its context. --target-token explains that next token (--contrast: its logit minus
the other token's) with one row per method. Tokens are shown as the tokenizer decodes them one by one.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from libra_jax import text
from libra_jax.cli.explain import explainer
from libra_jax.cli.explain_text import terminal_line, tokenizer_from
from libra_jax.cli.options import UserError, methods_from, model_from, require_kind
from libra_jax.methods.names import by_preset
from libra_jax.rules import get_rules
from libra_jax.text.next_token import KINDS


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--generate",
        type=int,
        metavar="N",
        help="decoders: generate N tokens greedily after --prompt and explain each (default 1: the next token)",
    )
    what.add_argument(
        "--continuation", metavar="TEXT", help="decoders: explain each token of this continuation of --prompt"
    )
    what.add_argument(
        "--target-token",
        metavar="TOKEN",
        help="decoders: explain this next token after --prompt (one vocabulary token, as text ' Paris' or as an entry)",
    )
    p.add_argument(
        "--contrast", metavar="TOKEN", help="decoders, with --target-token: explain its logit minus this one's"
    )
    p.add_argument(
        "--target-kind",
        choices=KINDS,
        help="decoders: explain each token's logit, log-probability or probability (default: the rule preset's,"
        " prob under libra / vanilla, logit under the *_logit presets)",
    )


def flags(args: argparse.Namespace) -> dict[str, object]:
    """The decoder-only flags and their values (None: not given)."""
    return {
        "--generate": args.generate,
        "--continuation": args.continuation,
        "--target-token": args.target_token,
        "--contrast": args.contrast,
        "--target-kind": args.target_kind,
    }


def run(args: argparse.Namespace) -> int:
    """Explain the --prompt's continuation or next token; the exit code."""
    methods = methods_from(args)
    if len(args.prompt) > 1:
        raise UserError("a decoder explains one --prompt at a time")
    if args.contrast is not None and args.target_token is None:
        raise UserError("--contrast needs --target-token (the token it is contrasted with)")
    model, params, _ = model_from(args)
    require_kind(model, args.model, "decoder", "--prompt")
    tokenizer = tokenizer_from(args, model)
    try:
        if args.target_token is not None:
            return next_token(args, methods, model, params, tokenizer)
        return generation(args, methods, model, params, tokenizer)
    except ValueError as e:  # the tokenizer's and explain_generation's clear errors (too long, seam, shapes)
        raise UserError(str(e)) from None


def generation(args, methods, model, params, tokenizer) -> int:
    """--generate / --continuation: one row per continuation token and method."""
    prompt = args.prompt[0]
    if args.continuation is not None:
        prompt_ids, continuation_ids = tokenizer.split_continuation(prompt, args.continuation)
        inputs, continuation = tokenizer.pad([prompt_ids]), np.asarray([continuation_ids], np.int32)
    else:
        inputs, continuation = tokenizer([prompt]), 1 if args.generate is None else args.generate
    explained = {}
    for preset, names in by_preset(methods).items():
        fn = text.explain_generation(model, names, preset, target=args.target_kind)
        explained[preset] = out = fn(params, inputs, continuation)
        continuation = out.continuation  # every further preset explains the same tokens
    n_prompt, new = out.prompt_length, np.asarray(out.continuation[0])
    shown = tokenizer.display(np.asarray(out.tokens[0]))
    print(f"prompt: {prompt!r}")
    print(f"continuation: {tokenizer.backend.decode([int(i) for i in new])!r}")
    rows, bold = [], []
    for i in range(len(new)):
        end = n_prompt + i  # the token's position; its row is zero from there on
        for name, (method, preset) in methods.items():
            value = float(explained[preset].targets[0, i])
            kind = args.target_kind or get_rules(preset).target
            scores = np.asarray(explained[preset].maps[method][0, i, : end + 1])
            print(terminal_line(f"{shown[end]!r} ({kind} {value:.4g}) {name}", shown[:end], scores[:-1]))
            rows.append((f"{name}: {shown[end]} ({kind} {value:.4g})", shown[: end + 1], scores))
            bold.append(end)
    text.render_html(rows, title=f"libra-jax explain: {args.model}", path=args.out, bold=bold)
    print(f"wrote {args.out}")
    return 0


def next_token(args, methods, model, params, tokenizer) -> int:
    """--target-token [--contrast]: the next token after the prompt, one row per method."""
    inputs = tokenizer([args.prompt[0]])
    model.check_inputs(inputs)
    last = inputs.ids.shape[1] - 1
    token = tokenizer.token_id(args.target_token)
    if args.contrast is None:
        y = text.target_at(last, token)[None]

        def target_for(preset):
            return text.next_token_target(args.target_kind or get_rules(preset).target)

        what = f"next token {args.target_token!r}"
    else:
        y = text.target_at(last, token, tokenizer.token_id(args.contrast))[None]

        def target_for(preset):
            return text.contrast_target()

        what = f"logit {args.target_token!r} − logit {args.contrast!r}"
    logits, maps = explainer(model, methods, target_for)(params, inputs, y)
    probs = np.asarray(jax.nn.softmax(np.asarray(logits[0, last], np.float32)))
    shown = tokenizer.display(np.asarray(inputs.ids[0]))
    print(f"prompt: {args.prompt[0]!r}")
    top = np.argsort(-probs)[:5]
    print("next token: " + ", ".join(f"{tokenizer.display([k])[0]!r} p={probs[k]:.4f}" for k in top))
    print(f"explaining {what} with {', '.join(methods)}")
    rows = []
    for name in methods:
        scores = np.asarray(maps[name][0])
        print(terminal_line(name, shown, scores))
        rows.append((name, shown, scores))
    text.render_html(rows, title=f"libra-jax explain: {args.model}", path=args.out)
    print(f"wrote {args.out}")
    return 0
