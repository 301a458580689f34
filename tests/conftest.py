"""Shared fixtures (the golden outputs and how tests compare with them: golden.py)."""

from __future__ import annotations

import fnmatch
import types

import jax
import pytest


@pytest.fixture
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


# ---- markers (registered in pyproject.toml), assigned from the tables below ----

GOLDEN = {
    "test_bert_golden.py": ("*",),
    "test_golden.py": ("*",),
    "test_legrad_clip.py": ("*",),
    "test_lrp.py": ("*",),  # even its parametrisation reads the golden keys
    "test_mixer.py": ("test_*golden*",),
}
"""Tests that read ../shared/golden: module → fnmatch patterns of test function names."""

TORCH_PACKAGES = ("torch", "timm", "transformers", "open_clip")
"""A test module that imports one of these (at module level) is marked `torch`."""

SLOW = {
    "test_beit_eva.py": ("test_hub_and_libra_file_loads",),
    "test_evaluate.py": ("test_cli_evaluate_on_a_saved_model",),
    "test_loading.py": (
        "test_forward_parity_with_timm",
        "test_resampling_matches_timm",
        "test_converter_cli_round_trip",
    ),
    # the golden tests share a module fixture (87 s setup): all of them, or the next one pays it
    "test_mixer.py": ("test_libra_checkpoint_round_trip", "test_golden_logits_and_patches", "test_golden_preset_maps"),
    "test_registry.py": ("test_registry_agrees_with_timm",),
    "test_train.py": ("test_fit_reduces_the_loss_and_the_checkpoint_round_trips",),
    "test_weights.py": ("test_a_libra_file_loads_directly_and_reports_its_own_keys",),
}
"""Test functions (all their parametrisations) measured at >= 5 s (call or setup) with `pytest --durations=0`
on the 2-core development machine. Extend it from a full run's durations; modules not listed have not been measured."""


def _matches(table: dict, item) -> bool:
    return any(fnmatch.fnmatch(item.originalname, p) for p in table.get(item.path.name, ()))


def _imports_torch(module) -> bool:
    return any(
        isinstance(v, types.ModuleType) and v.__name__.split(".")[0] in TORCH_PACKAGES for v in vars(module).values()
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _matches(GOLDEN, item):
            item.add_marker(pytest.mark.golden)
        if _matches(SLOW, item):
            item.add_marker(pytest.mark.slow)
        if _imports_torch(item.module):
            item.add_marker(pytest.mark.torch)
