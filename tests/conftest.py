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
    "test_golden.py": ("*",),
    "test_legrad_clip.py": ("*",),
    "test_lrp.py": ("*",),  # even its parametrisation reads the golden keys
    "test_mixer.py": ("test_*golden*",),
}
"""Tests that read ../shared/golden: module → fnmatch patterns of test function names."""

TORCH_PACKAGES = ("torch", "timm", "transformers", "open_clip")
"""A test module that imports one of these (at module level) is marked `torch`."""

SLOW = {
    "test_loading.py": (
        "test_forward_parity_with_timm",
        "test_resampling_matches_timm",
        "test_converter_cli_round_trip",
    ),
    "test_registry.py": ("test_registry_agrees_with_timm",),
}
"""Test functions (all their parametrisations) measured at >= 5 s with `pytest --durations=0` on 2 cores."""


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
