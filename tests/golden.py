"""The golden outputs of the official code (read in place, never copied) and how we compare with them.

Tolerance scheme (every golden-parity test: LibraGrad cases, gMixer, chefer_vit, legrad_clip)
---------------------------------------------------------------------------------------------
A float32 map is exact only up to its own rounding, and how large that is depends on how well-conditioned
the map is, not on the CPU. So every map is computed twice, in float32 and in float64 (`jax.enable_x64`,
params and inputs cast; the float64 result is "exact" for our purposes), and two things are checked, each
against the map's scale s (per image: max |golden| over the map; for scalars per image: |golden|; for a
completeness error Σ map − f: |f|, the size of the two numbers it is the difference of):

1. **Same definition as the official code**: |ours₆₄ − golden| ≤ 1e-4·s. Where the official code also
   stored a float64 run (chefer_vit), that is compared to ours₆₄ at 1e-9·s instead.
2. **Our float32 is as good as float32 gets**: |ours₃₂ − ours₆₄| ≤ 1e-4·s.

Neither depends on which float32 kernels a CPU picks: on every well-conditioned map both float32 results
(ours and the official) sit ~1e-6·s from the float64 one.

Where a map is **ill-conditioned** (its float32 value is dominated by rounding), both bounds get an extra
term that is *derived*, not tuned. The maps in question are channel sums Σ_c u_c·v_c whose terms cancel:
IxG (Σ_c h·g) and the pooled-head bias map (Σ_k b_k·∂f/∂z_k, which cancels under the softmax-probability
target since Σ_k ∂p_y/∂z_k = 0). The float32 rounding of such a sum is at most a few eps₃₂·Σ_c|u·v|; we
allow `ROUNDING_FACTOR`·eps₃₂·Σ_c|u·v| (Σ|u·v| from the float64 pass). A map gets it exactly when that bound
exceeds the 1e-4·s tolerance somewhere (`ill_conditioned`: Σ|u·v| / s > `ILL_CONDITIONED_RATIO`), and a
test asserts the selection is exactly the documented one: CLIP's IxG through `norm_pre` under a plain
LayerNorm rule (the plain input gradient is orthogonal to x − μ, so Σ_c h₀·g₀ is ~3e4× smaller than its
terms; float32 maps, ours and the official, are 6.7e-4·s and 6.9e-4·s from float64), a few vanilla IxG₀ maps
just past the ratio, and CLIP's head-bias map under the probability target (ratio 381; ours off by 1.1e-4·s
on one CPU). Measured errors are ≤ 0.45·eps₃₂·Σ|u·v|. What is meaningful for CLIP's IxG₀ is pinned
separately: the float64 map against an independent float64 closed form
(`test_golden.test_plain_ln_ixg_closed_form`).
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = pathlib.Path(os.environ.get("LIBRA_JAX_GOLDEN", REPO.parent / "shared" / "golden"))

GOLDEN_PRESETS = {
    "Libra": "libra",
    "NG": "vanilla",
    "Libra_S0": "libra_logit",
    "NG_S0": "vanilla_logit",
    "AttnLRP": "attnlrp",
    "DecompX": "decompx",
    "AliLRP": "cp_lrp",
    "WO-Att": "wo_att",
    "WO-LN": "wo_ln",
    "WO-Act": "wo_act",
}
"""The official preset files every golden case has → our presets (gated cases add `WO-MLP` → `wo_gate`)."""

RTOL = 1e-4
"""Both checks, relative to the map's scale (see the module docstring)."""
ROUNDING_FACTOR = 4.0
"""× eps₃₂·Σ_c|h·g|: the float32 rounding allowance of an ill-conditioned IxG map (measured ≤ 0.45)."""
EPS32 = float(np.finfo(np.float32).eps)
ILL_CONDITIONED_RATIO = RTOL / (ROUNDING_FACTOR * EPS32)
"""Σ_c|u·v| / s above which a channel-sum map's float32 rounding bound exceeds the 1e-4·s tolerance (≈ 210)."""


def golden_dir(case: str) -> pathlib.Path:
    """The golden case folder; a missing folder is an error (CI has ../shared), not a skip."""
    path = GOLDEN / case
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"golden case {case!r} not found under {GOLDEN}; set LIBRA_JAX_GOLDEN to the shared/golden folder"
        )
    return path


def load_golden_case(case: str, **overrides):
    """(model, params, images NHWC, labels, config dict) of a golden case, through `libra_jax.load`
    (`overrides`: model kwargs on top of the case's create_kwargs)."""
    from libra_jax import load

    path = golden_dir(case)
    cfg = json.loads((path / "config.json").read_text())
    kwargs = {**cfg["create_kwargs"], **overrides}
    model, params = load(cfg["timm_name"], checkpoint=str(path / "model.safetensors"), **kwargs)
    inputs = np.load(path / "inputs.npz")
    images = np.ascontiguousarray(inputs["images"].transpose(0, 2, 3, 1))
    return model, params, images, inputs["labels"], cfg


def in_float64(fn, *trees):
    """fn(*trees) with x64 enabled and every floating leaf of `trees` cast to float64; numpy results."""
    with jax.enable_x64(True):
        cast = [jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if _is_float(a) else a, t) for t in trees]
        return jax.tree.map(np.asarray, fn(*cast))


def _is_float(a) -> bool:
    return jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)


def our_maps(model, params, images, labels, presets: dict) -> dict:
    """{preset: every golden key the model can have} from one pass per example and preset, all presets in
    ONE jitted call (one compile per case and dtype). `presets`: golden preset name → `Rules`.

    Besides the golden keys, `ixg_block{i}_terms` holds Σ_c |h_i·g_i| (the float32 rounding scale of IxG_i)
    and `fullgrad_biases_head_end_terms` Σ_k |b_k·∂f/∂z_k| of the classifier head's bias on token 0.
    """
    from libra_jax.methods import api, core, maps

    def one(rules, x, y):
        rec = core.single_pass(model, params, x, y, rules, core.target_function(rules, None))
        out = {k: fn(rec, model) for k, fn in maps.SINGLE_PASS.items() if api.supports(model, k)}
        ixg, fg = maps.ixg_layers(rec), maps.fullgrad_layers(rec, model)
        groups = maps.bias_groups(rec, model)
        out |= {f"ixg_block{i}": v for i, v in enumerate(ixg)}
        terms = [jnp.abs(h * g).sum(-1) for h, g in zip(rec["h"][:-1], rec["g"][:-1], strict=True)]
        out |= {f"ixg_block{i}_terms": v for i, v in enumerate(terms)}
        out |= {f"fullgrad_block{i}": v for i, v in enumerate(fg)}
        if rec["attn"]:
            out |= {
                f"attcat_block{i}": a.mean(axis=(-3, -2)) * ixg_next
                for i, (a, ixg_next) in enumerate(zip(rec["attn"][:-1], ixg[1:], strict=True))
            }
        out["target"] = rec["target"]
        dz = jax.grad(core.target_function(rules, None))(rec["logits"], y)
        head = jnp.abs(dz * params["head"]["bias"]).sum() if "head" in params else 0.0
        out["fullgrad_biases_head_end_terms"] = jnp.zeros_like(ixg[0]).at[0].set(head)
        out["fullgrad_biases"] = maps.all_biases(rec, model)
        out["fullgrad_biases_head_end"] = groups["end"] + groups["head"]
        out["ixg_completeness_error"] = ixg[0].sum() - rec["target"]
        # the official error also counts the bias maps no token holds (Mixer token-MLP fc1; 0 elsewhere)
        out["fullgrad_completeness_error"] = fg[0].sum() + sum(groups["unassigned"]) - rec["target"]
        assert len(ixg) == model.config.depth
        return out

    @jax.jit
    def run(x, y):
        return {name: jax.vmap(lambda xi, yi, r=rules: one(r, xi, yi))(x, y) for name, rules in presets.items()}

    return jax.tree.map(np.asarray, run(jnp.asarray(images), jnp.asarray(labels)))


def map_scale(want: np.ndarray, key: str = "", target: np.ndarray | None = None) -> np.ndarray:
    """The scale s of a golden array (leading batch axis), broadcastable to it: per image max|·| over the
    map axes, |·| for one scalar per image, |f| for a completeness error (`target` f)."""
    if key.endswith("completeness_error") and target is not None:
        want = target
    want = np.abs(np.asarray(want, np.float64))
    s = want.reshape(want.shape[0], -1).max(-1) if want.ndim > 1 else want
    return np.maximum(s, np.finfo(np.float32).tiny).reshape(-1, *([1] * (np.ndim(want) - 1)))


def ill_conditioned(exact: dict) -> dict[str, np.ndarray]:
    """{key: its float32 rounding allowance} for the channel-sum maps (of one preset's float64 results `exact`)
    whose cancellation ratio Σ_c|u·v| / s exceeds `ILL_CONDITIONED_RATIO`; `ixg` is IxG at block 0."""
    out = {}
    for key in exact:
        if not key.endswith("_terms"):
            continue
        terms = exact[key]
        if (terms / map_scale(exact[key[: -len("_terms")]])).max() > ILL_CONDITIONED_RATIO:
            allowance = ROUNDING_FACTOR * EPS32 * terms
            out[key[: -len("_terms")]] = allowance
            if key == "ixg_block0_terms":
                out["ixg"] = allowance
    return out


def assert_golden(ours32: dict, exact: dict, gold, where: str, slack: dict | None = None) -> None:
    """Checks 1 and 2 of the module docstring for every key of the golden file `gold` (an npz or a dict).

    `ours32` / `exact`: our float32 / float64 results by golden key; `slack`: key → extra per-element
    allowance (default: `ill_conditioned(exact)`).
    """
    slack = ill_conditioned(exact) if slack is None else slack
    target = gold["target"] if "target" in gold else None
    for key in gold.keys():
        if key not in exact:
            raise AssertionError(f"{where}: golden key {key!r} has no counterpart")
        want = np.asarray(gold[key], np.float64)
        tol = np.broadcast_to(RTOL * map_scale(want, key, target) + slack.get(key, 0.0), want.shape)
        checks = (("float64 vs golden", exact[key], want), ("float32 vs float64", ours32[key], exact[key]))
        for name, have, ref in checks:
            err = np.abs(np.asarray(have, np.float64) - ref)
            if not np.all(err <= tol):
                worst = np.unravel_index(np.argmax(err - tol), err.shape)
                rule = f"{RTOL:g}·scale" + (" + rounding allowance" if key in slack else "")
                raise AssertionError(
                    f"{where}/{key}: {name} differs by {err[worst]:.3e} at {worst}, allowed {tol[worst]:.3e} ({rule})"
                )
