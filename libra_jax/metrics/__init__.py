"""Metrics that judge attributions."""

from libra_jax.metrics.completeness import completeness_error, completeness_residuals

__all__ = ["completeness_error", "completeness_residuals"]
