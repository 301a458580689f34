"""Metrics that judge attributions: completeness, faithfulness (MIF / LIF / SRG) and segmentation."""

from libra_jax.metrics.completeness import completeness_error, completeness_residuals
from libra_jax.metrics.faithfulness import RATIOS, DeletionAccumulator, deletion_curves, merge_curves, summarize
from libra_jax.metrics.segmentation import (
    average_precision,
    chefer_segmentation,
    chefer_summary,
    class_discrimination_ap,
    mean_ap,
    upsample,
)

__all__ = [
    "RATIOS",
    "DeletionAccumulator",
    "average_precision",
    "chefer_segmentation",
    "chefer_summary",
    "class_discrimination_ap",
    "completeness_error",
    "completeness_residuals",
    "deletion_curves",
    "mean_ap",
    "merge_curves",
    "summarize",
    "upsample",
]
