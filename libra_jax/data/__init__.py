"""Benchmarks with exact ground truth for evaluating attributions (see `libra_jax.data.synthetic`)."""

from libra_jax.data.synthetic import (
    CLASSES,
    SPLITS,
    BenchmarkConfig,
    ObjectClass,
    ObjectSpec,
    Scene,
    class_names,
    make_pair,
    make_single,
    make_split,
    paint,
    scene,
)

__all__ = [
    "CLASSES",
    "SPLITS",
    "BenchmarkConfig",
    "ObjectClass",
    "ObjectSpec",
    "Scene",
    "class_names",
    "make_pair",
    "make_single",
    "make_split",
    "paint",
    "scene",
]
