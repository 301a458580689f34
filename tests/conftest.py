"""Shared fixtures: the golden outputs of the official code (read in place, never copied)."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Collection

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
"""The official preset files every golden case has → our presets (gated cases add `WO-MLP`)."""


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
    from libra_jax.loading import load

    path = golden_dir(case)
    cfg = json.loads((path / "config.json").read_text())
    kwargs = {**cfg["create_kwargs"], **overrides}
    model, params = load(cfg["timm_name"], checkpoint=str(path / "model.safetensors"), **kwargs)
    inputs = np.load(path / "inputs.npz")
    images = np.ascontiguousarray(inputs["images"].transpose(0, 2, 3, 1))
    return model, params, images, inputs["labels"], cfg


@pytest.fixture
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def our_maps(model, params, images, labels, rules):
    """Every golden key the model can have, computed from one pass per example (leading batch axis)."""
    from libra_jax.methods import api, core, maps

    target = core.target_function(rules, None)
    methods = {k: fn for k, fn in maps.SINGLE_PASS.items() if api.supports(model, k)}

    def one(x, y):
        rec = core.single_pass(model, params, x, y, rules, target)
        out = {k: fn(rec, model) for k, fn in methods.items()}
        ixg, fg = maps.ixg_layers(rec), maps.fullgrad_layers(rec, model)
        groups = maps.bias_groups(rec, model)
        depth = len(ixg)
        out |= {f"ixg_block{i}": v for i, v in enumerate(ixg)}
        out |= {f"fullgrad_block{i}": v for i, v in enumerate(fg)}
        if rec["attn"]:
            out |= {
                f"attcat_block{i}": a.mean(axis=(-3, -2)) * ixg_next
                for i, (a, ixg_next) in enumerate(zip(rec["attn"][:-1], ixg[1:], strict=True))
            }
        out["target"] = rec["target"]
        out["fullgrad_biases"] = maps.all_biases(rec, model)
        out["fullgrad_biases_head_end"] = groups["end"] + groups["head"]
        out["ixg_completeness_error"] = ixg[0].sum() - rec["target"]
        # the official error also counts the bias maps no token holds (Mixer token-MLP fc1; 0 elsewhere)
        out["fullgrad_completeness_error"] = fg[0].sum() + sum(groups["unassigned"]) - rec["target"]
        assert depth == model.config.depth
        return out

    return jax.jit(jax.vmap(one))(jnp.asarray(images), jnp.asarray(labels))


def assert_matches_golden(ours: dict, gold, where: str, loose: Collection[str] = ()) -> None:
    """Every key of a golden preset file `gold` (an npz) has a counterpart in `ours` that matches it.

    rtol 1e-4 with atol 1e-6·max|golden| (1e-3·max|golden| for the keys in `loose`); completeness
    errors, a difference of two O(f) numbers, get at least atol 2e-6·max|f|.
    """
    for key in gold.files:
        want = gold[key]
        if key not in ours:
            raise AssertionError(f"{where}: golden key {key!r} has no counterpart")
        atol = (1e-3 if key in loose else 1e-6) * np.abs(want).max()
        if key.endswith("completeness_error"):
            atol = max(atol, 2e-6 * np.abs(gold["target"]).max())
        np.testing.assert_allclose(np.asarray(ours[key]), want, rtol=1e-4, atol=atol, err_msg=f"{where}/{key}")
