"""Shared fixtures: the golden outputs of the official code (read in place, never copied)."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = pathlib.Path(os.environ.get("LIBRA_JAX_GOLDEN", REPO.parent / "shared" / "golden"))


def golden_dir(case: str) -> pathlib.Path:
    """The golden case folder; a missing folder is an error (CI has ../shared), not a skip."""
    path = GOLDEN / case
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"golden case {case!r} not found under {GOLDEN}; set LIBRA_JAX_GOLDEN to the shared/golden folder"
        )
    return path


def load_golden_case(case: str):
    """(model, params, images NHWC, labels, config dict) of a golden case, through `libra_jax.load`."""
    from libra_jax.loading import load

    path = golden_dir(case)
    cfg = json.loads((path / "config.json").read_text())
    model, params = load(cfg["timm_name"], checkpoint=str(path / "model.safetensors"), **cfg["create_kwargs"])
    inputs = np.load(path / "inputs.npz")
    images = np.ascontiguousarray(inputs["images"].transpose(0, 2, 3, 1))
    return model, params, images, inputs["labels"], cfg


@pytest.fixture
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield
