"""Will Libra FullGrad+ of an 8B Llama fit one 80 GB GPU? XLA's memory estimate from compilation alone.

    PYTHONPATH=. python benchmarks/memory_8b.py                  # Llama-3-8B, 4096 tokens, bf16, all 32 layers
    PYTHONPATH=. python benchmarks/memory_8b.py --layers 2 4     # shallower copies, extrapolated to 32 per layer

Nothing is allocated or run: the params tree comes from `jax.eval_shape` (bf16 `ShapeDtypeStruct`s), the
inputs are abstract too, and each variant is lowered and compiled for the default backend; XLA's buffer
assignment (arguments + outputs + temporaries, bench.py `xla_bytes`) is compared with --budget-gib. On a GPU
the numbers are the GPU compiler's own; on a CPU they estimate them (XLA:CPU fuses differently and needs no
cuDNN workspace). With two or more --layers below the full depth, the full-depth figure is extrapolated
linearly from the two deepest: per layer = the difference / the layer difference (every block is the same
size, so the graph grows by one block's buffers per layer).
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
from bench import environment, publish, xla_bytes

from libra_jax.methods import attribution, libra_fullgrad_plus
from libra_jax.models.decoder import Decoder, DecoderConfig
from libra_jax.models.rope1d import RopeScaling
from libra_jax.models.text_inputs import TextInputs
from libra_jax.text.next_token import next_token_target

LLAMA3_8B = DecoderConfig(
    vocab_size=128256,
    hidden_size=4096,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    intermediate_size=14336,
    norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192),
    max_positions=131072,
)
"""meta-llama/Meta-Llama-3.1-8B's config.json geometry (untied embeddings, llama3 RoPE scaling)."""


def variants(model: Decoder) -> dict:
    """Attribution functions fn(params, inputs, y) (y: (B, 2) position, token) whose memory is estimated."""
    target = next_token_target("prob")
    rematted = model.clone(remat=True)
    return {
        "libra_fullgrad_plus": libra_fullgrad_plus(model, target=target),
        "remat: libra_fullgrad_plus": libra_fullgrad_plus(rematted, target=target),
        "remat: attnlrp (ixg)": attribution(rematted, "ixg", rules="attnlrp", target=target),
    }


def abstract_arguments(model: Decoder, batch: int, tokens: int, dtype: str) -> tuple:
    """(params in `dtype`, TextInputs (batch, tokens), targets (batch, 2)) as shapes only."""
    one = jax.ShapeDtypeStruct((1,), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), TextInputs(one, one, one))["params"]
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.dtype(dtype)), shapes)
    ids = jax.ShapeDtypeStruct((batch, tokens), jnp.int32)
    return params, TextInputs(ids, ids, ids), jax.ShapeDtypeStruct((batch, 2), jnp.int32)


def extrapolate(low: tuple[int, float], high: tuple[int, float], depth: int) -> tuple[float, float]:
    """(the figure at `depth`, its growth per layer) from the (depth, figure) pairs `low` and `high`, linearly."""
    per_layer = (high[1] - low[1]) / (high[0] - low[0])
    return high[1] + per_layer * (depth - high[0]), per_layer


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[LLAMA3_8B.num_layers], help="depths compiled")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="params and compute")
    p.add_argument("--budget-gib", type=float, default=78.0, help="usable device memory (an 80 GB H100: about 78)")
    p.add_argument("--out", help="Markdown file to append the results to (written atomically)")
    args = p.parse_args(argv)
    full = LLAMA3_8B.num_layers
    if min(args.layers) < 1 or max(args.layers) > full:
        p.error(f"--layers must lie in 1..{full}")
    depths = sorted(set(args.layers))
    count = sum(s.size for s in jax.tree.leaves(abstract_arguments(Decoder(LLAMA3_8B), 1, 1, args.dtype)[0]))
    lines = [
        f"## Llama-3-8B geometry, batch {args.batch}, {args.tokens} tokens, {args.dtype} (XLA buffer assignment)",
        "",
        *environment(()),
        f"- backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); {count / 1e9:.2f} B params, "
        f"budget {args.budget_gib:g} GiB; nothing allocated (peak RSS reported after each compile)",
        "",
        "| layers | variant | GiB | fits | compile s | peak RSS GiB |",
        "|---:|---|---:|:---:|---:|---:|",
    ]
    measured = {}
    for depth in depths:
        model = Decoder(LLAMA3_8B.replace(num_layers=depth), dtype=None if args.dtype == "float32" else args.dtype)
        arguments = abstract_arguments(model, args.batch, args.tokens, args.dtype)
        for row, fn in variants(model).items():
            start = time.perf_counter()
            gib = measured[depth, row] = xla_bytes(fn, *arguments) / 2**30
            fits = "yes" if gib <= args.budget_gib else "no"
            lines.append(
                f"| {depth} | {row} | {gib:.1f} | {fits if depth == full else '-'} "
                f"| {time.perf_counter() - start:.0f} | {peak_rss_gib():.1f} |"
            )
            print(lines[-1], flush=True)
    if depths[-1] < full and len(depths) > 1:
        low, high = depths[-2], depths[-1]
        for row in variants(Decoder(LLAMA3_8B)):
            gib, per_layer = extrapolate((low, measured[low, row]), (high, measured[high, row]), full)
            fits = "yes" if gib <= args.budget_gib else "no"
            lines.append(f"| {full} (extrapolated, {per_layer:.2f} GiB/layer) | {row} | {gib:.1f} | {fits} | - | - |")
    publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
