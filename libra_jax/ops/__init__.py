"""LibraGrad primitives: the original forward op, computed once, with a rule-selected backward."""

from libra_jax.ops.activations import activation
from libra_jax.ops.attention import attention
from libra_jax.ops.gating import gate_product
from libra_jax.ops.norms import layer_norm, rms_norm, unit_norm

__all__ = ["activation", "attention", "gate_product", "layer_norm", "rms_norm", "unit_norm"]
