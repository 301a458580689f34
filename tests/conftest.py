"""Shared fixtures (the golden outputs and how tests compare with them: golden.py)."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield
