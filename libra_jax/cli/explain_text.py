"""`libra-jax explain --text`: a text classifier's top classes and its words coloured by relevance.

    libra-jax explain --model synthetic_bert --text "the referee saw the goal" \\
        --method libra_fullgrad_plus ixg [--target 2 | --target <label name>] --out page.html

Prints the top classes and, per method, the words on a 24-bit colour background (`text.render_terminal`;
word(+score) when stdout is not a terminal; scores divided by the line's max |score|, which is printed), and
writes an HTML page with one row per method (`text.render_html`). A word's score is the sum of its pieces'
scores (`text.merge_words(reduce="sum")`, so a complete map stays complete over words); special tokens ([CLS],
[SEP]) are not shown.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from libra_jax import text
from libra_jax.cli.explain import explainer, label_names, print_top5
from libra_jax.cli.options import UserError, methods_from, model_from, require_kind
from libra_jax.text.checkpoints import tokenizer_for


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text",
        action="append",
        metavar="TEXT",
        help="text classifiers: explain this text; repeat for several (one batch)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="text models: a tokenizer.json file, or a folder / HF repo holding one (default: the model's own)",
    )


def tokenizer_from(args: argparse.Namespace, model) -> text.TextTokenizer:
    """The tokenizer of --model (or --tokenizer)."""
    try:
        return tokenizer_for(args.model, model, args.tokenizer)
    except (OSError, ValueError) as e:
        raise UserError(str(e)) from None


def terminal_line(label: str, words: list[str], scores: np.ndarray) -> str:
    """`label (max |s| m):` and the words coloured (or word(+score)) at score / m, so the plain form shows the
    relative sizes whatever the map's scale; m = 1 for an all-zero map."""
    top = float(np.abs(scores).max(initial=0.0)) or 1.0
    return f"  {label} (max |s| {top:.3g}): {text.render_terminal(words, scores / top)}"


def class_indices(targets: list, names: dict[int, str] | None, num_classes: int) -> list[int]:
    """--target values (indices or label names) → class indices; UserError for an unknown one."""
    by_name = {v: k for k, v in (names or {}).items()}
    out = []
    for t in targets:
        k = by_name.get(t) if isinstance(t, str) else t
        if k is None:
            known = f"the labels are {sorted(by_name)}" if by_name else "the model names no labels: pass an index"
            raise UserError(f"--target {t!r} is not a class of the model; {known}")
        if not 0 <= k < num_classes:
            raise UserError(f"--target {k} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
        out.append(k)
    return out


def run(args: argparse.Namespace) -> int:
    """Explain each --text; the exit code."""
    methods = methods_from(args)
    model, params, _ = model_from(args)
    require_kind(model, args.model, "text_classifier", "--text")
    tokenizer = tokenizer_from(args, model)
    try:
        inputs = tokenizer(args.text)
    except ValueError as e:
        raise UserError(str(e)) from None
    num_classes = model.capabilities.num_classes
    names = label_names(args.model, args.checkpoint, num_classes)
    targets = class_indices(args.target or [], names, num_classes)
    y = np.tile(np.asarray(targets, np.int32), (len(args.text), 1)) if targets else None
    logits, maps = explainer(model, methods)(params, inputs, y)
    probs = np.asarray(jax.nn.softmax(np.asarray(logits, np.float32), axis=-1))
    if y is None:  # each text's top-1 class, one target per text
        y, maps = probs.argmax(-1)[:, None], {name: m[:, None] for name, m in maps.items()}
    rows = []
    for b, sentence in enumerate(args.text):
        print_top5(repr(sentence), probs[b], names)
        words, index = text.encoding_words(sentence, tokenizer.backend.encode(sentence))
        index = np.pad(index, (0, inputs.ids.shape[1] - len(index)), constant_values=-1)  # right padding: no word
        for t, k in enumerate(y[b]):
            caption = f"class {k}" + (f" {names[k]}" if names and k in names else "")
            print(f"explaining {caption} with {', '.join(methods)}")
            for name in methods:
                scores = np.asarray(text.merge_words(maps[name][b, t], index, len(words), reduce="sum"))
                print(terminal_line(name, words, scores))
                label = f"{name} · {caption}" + (f" · text {b + 1}" if len(args.text) > 1 else "")
                rows.append((label, words, scores))
    text.render_html(rows, title=f"libra-jax explain: {args.model}", path=args.out)
    print(f"wrote {args.out}")
    return 0
