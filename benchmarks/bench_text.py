"""Attribution cost against the plain-gradient floor on a random-init text Transformer (timing only).

    PYTHONPATH=. python benchmarks/bench_text.py --family bert --batch 8 --tokens 128 512  # BERT-base
    PYTHONPATH=. python benchmarks/bench_text.py --family llama --batch 4 --tokens 512 2048  # Llama ~100M
    PYTHONPATH=. python benchmarks/bench_text.py --family llama --dtype bfloat16 --remat --out benchmarks/results/gpu.md

The text counterpart of bench.py (same timing and memory helpers, same table): every variant is jitted once,
its first call (which compiles) reported apart, then the median of --repeats interleaved calls, each closed by
`block_until_ready`; memory is XLA's buffer assignment of the compiled call. Variants, for each --tokens N:
  floor        jax.grad of the explained target w.r.t. the input embeddings h₀ (one forward, one backward),
               vanilla rules;
  libra_fullgrad_plus, vanilla fullgrad_plus;
  all single-pass maps the model supports, LibraGrad rules, from one forward/backward pass;
  attnlrp      IxG under the AttnLRP preset.
The explained target: BERT the softmax probability of class y (the `libra` preset's); Llama the probability
of a given next token after the last position (`text/next_token.py`). Random token ids, no padding.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from bench import FLOOR, environment, measure, publish, supported_single_pass, table, xla_bytes

from libra_jax.methods import attribution, core, fullgrad_plus, libra_fullgrad_plus
from libra_jax.models.bert import BertClassifier, BertConfig, param_shapes
from libra_jax.models.decoder import Decoder, DecoderConfig
from libra_jax.rules import PRESETS
from libra_jax.text import text_inputs
from libra_jax.text.next_token import next_token_target

SIZES = {
    "bert": {
        "base": BertConfig(),  # bert-base-uncased: 12 layers, 768 wide, 12 heads, 3072 MLP, vocab 30522
        "micro": BertConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
    },
    "llama": {
        "100m": DecoderConfig(  # Llama-style, tied embeddings (as Llama 3.2 1B / 3B): 100.1 M params
            vocab_size=32000,
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            num_kv_heads=4,
            head_dim=64,
            intermediate_size=2048,
            rope_theta=500000.0,
            max_positions=4096,
            tie_embeddings=True,
        ),
        "micro": DecoderConfig(
            vocab_size=64,
            hidden_size=16,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            head_dim=8,
            intermediate_size=32,
            max_positions=64,
        ),
    },
}
"""Geometries by family and --size, built directly (random init: no download)."""

TARGETS = {"libra_fullgrad_plus": 1.15, "all single-pass (libra)": 1.3}
"""Cost targets (issues #13, #14): the most a variant may take, as a multiple of the floor's median time."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="bert", choices=sorted(SIZES))
    p.add_argument("--size", default=None, help="bert: base | micro; llama: 100m | micro (default: the first)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, nargs="+", default=[128, 512], help="sequence lengths, one table each")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per variant after the warm-up call")
    p.add_argument("--precision", default="default", choices=("default", "high", "highest"), help="matmul precision")
    p.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16"), help="llama: params and compute dtype"
    )
    p.add_argument("--remat", action="store_true", help="llama: rematerialise every block in the backward")
    p.add_argument(
        "--check-inputs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="input validation inside the attribution functions (a host callback under jit)",
    )
    p.add_argument("--out", help="Markdown file to append the results to (written atomically)")
    args = p.parse_args(argv)
    sizes = SIZES[args.family]
    args.size = args.size or next(iter(sizes))
    if args.size not in sizes:
        p.error(f"--size {args.size!r} for {args.family}; expected one of {sorted(sizes)}")
    if args.family == "bert" and (args.dtype != "float32" or args.remat):
        p.error("--dtype bfloat16 and --remat are options of the decoder (--family llama); BERT runs float32")
    if args.batch < 1 or args.repeats < 1 or min(args.tokens) < 2:
        p.error("--batch and --repeats must be positive, --tokens at least 2")
    if max(args.tokens) > sizes[args.size].max_length:
        p.error(f"--tokens {max(args.tokens)} exceeds the {args.size} context of {sizes[args.size].max_length}")
    return args


def build(args: argparse.Namespace):
    """(model, params drawn from the shapes alone: N(0, 0.02²), norm scales 1, in --dtype, the explained target)."""
    config = SIZES[args.family][args.size]
    if args.family == "bert":
        model, target = BertClassifier(config), "prob"
        shapes = param_shapes(model)
    else:
        model = Decoder(config, remat=args.remat, dtype=None if args.dtype == "float32" else args.dtype)
        target = next_token_target("prob")
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), text_inputs(np.zeros((1,), np.int32)))["params"]
    rng = np.random.default_rng(0)
    dtype = jnp.dtype(args.dtype)

    def draw(path, spec):
        if path[-1].key == "scale":
            return jnp.ones(spec.shape, dtype)
        return jnp.asarray(0.02 * rng.standard_normal(spec.shape), dtype)

    return model, jax.tree_util.tree_map_with_path(draw, shapes), target


def batch(model, tokens: int, size: int, family: str) -> tuple:
    """(TextInputs (size, tokens) of random ids, targets: class indices (size,) or (position, token) (size, 2))."""
    vocab = model.config.vocab_size
    ids = np.random.default_rng(tokens).integers(3, vocab, (size, tokens))
    if family == "bert":
        return text_inputs(ids), jnp.arange(size, dtype=jnp.int32) % model.config.num_classes
    return text_inputs(ids), jnp.stack([jnp.full(size, tokens - 1), jnp.arange(size) % vocab], axis=1)


def floor_fn(model, target) -> Callable:
    """fn(params, inputs, y) → ∂(Σ_b f(logits_b, y_b)) / ∂h₀ (B, N, C), vanilla rules: the cheapest gradient map."""
    f = core.target_function(PRESETS["vanilla"], target)

    def fn(params, inputs, y):
        variables = {"params": params}
        mask = model.token_mask(inputs)

        def total(tokens):
            logits, _ = model.apply(variables, tokens, mask=mask, method="forward_tokens")
            return jax.vmap(f)(logits.astype(jnp.float32), y).sum()

        return jax.grad(total)(model.apply(variables, inputs, method="embed"))

    return fn


def variants(model, target, check: bool) -> dict:
    """The timed functions fn(params, inputs, y), by row name."""
    single = supported_single_pass(model)
    common = dict(target=target, check_inputs=check)
    return {
        FLOOR: floor_fn(model, target),
        "libra_fullgrad_plus": libra_fullgrad_plus(model, **common),
        "fullgrad_plus (vanilla)": fullgrad_plus(model, **common),
        f"all single-pass (libra): {len(single)} maps": attribution(model, single, rules="libra", **common),
        "attnlrp (ixg)": attribution(model, "ixg", rules="attnlrp", **common),
    }


def geometry(config) -> str:
    """The model's geometry in words."""
    return (
        f"{config.num_layers} layers, hidden {config.hidden_size}, {config.num_heads} heads, "
        f"MLP {config.intermediate_size}, vocab {config.vocab_size}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, params, target = build(args)
    count = sum(p.size for p in jax.tree.leaves(params))
    jitted = {name: jax.jit(fn) for name, fn in variants(model, target, args.check_inputs).items()}
    single = supported_single_pass(model)
    precision = (
        contextlib.nullcontext() if args.precision == "default" else jax.default_matmul_precision(args.precision)
    )
    for tokens in args.tokens:
        inputs, y = batch(model, tokens, args.batch, args.family)
        calls = {name: (functools.partial(fn, params, inputs, y), jax.block_until_ready) for name, fn in jitted.items()}
        load_before = os.getloadavg()[0]
        with precision:
            results = measure(calls, args.repeats)
            memory = {name: xla_bytes(fn, params, inputs, y) for name, fn in jitted.items()}
        lines = [
            f"## {args.family} {args.size}, batch {args.batch}, {tokens} tokens",
            "",
            *environment(("transformers",)),
            f"- model: {args.family} {args.size} (random init; {geometry(model.config)}; {count / 1e6:.1f} M params), "
            f"dtype {args.dtype}, remat {args.remat}",
            f"- matmul precision: {args.precision}; check_inputs: {args.check_inputs}; "
            f"median of {args.repeats} calls after one warm-up (compiling) call, variants interleaved",
            f"- single-pass maps: {', '.join(single)}",
            f"- 1-min load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}",
            "",
            *table(results, memory, args.batch * tokens, "tokens", TARGETS),
        ]
        publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
