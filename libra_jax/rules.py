"""Gradient-rule presets: which backward rule each non-linearity uses.

The forward pass never depends on these rules; only the backward pass does. A `Rules`
value is static (frozen, hashable) and is passed explicitly to the model, so two rule sets
can be traced side by side without any global state.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

AttentionRule = Literal["plain", "detach", "attnlrp"]
NormRule = Literal["plain", "detach"]
ActivationRule = Literal["plain", "detach"]
GateRule = Literal["plain", "half"]
Target = Literal["prob", "logit"]


@dataclasses.dataclass(frozen=True)
class Rules:
    """Backward rules for the four LibraGrad op types plus the explained scalar.

    Attributes:
      attention: "plain"; "detach" (softmax(qkᵀ) constant, gradient only through v);
        "attnlrp" (gradient through A scaled by 1/4 and through v by 1/2, q/k not detached).
      norm: "plain" or "detach" (the LayerNorm σ / RMSNorm rms treated as a constant).
      activation: "plain" or "detach" (the gate of x·gate(x) treated as a constant).
      gate: "plain" or "half" (SwapBackward(a·b, a·b/2) on GLU/SwiGLU products).
      unit_norm: "plain" or "detach" (‖x‖ constant when normalising embeddings to unit
        length, the N2U rule used for CLIP-style similarity targets).
      target: "prob" (S1: softmax probability of the class) or "logit" (S0).
      name: preset name, informational only.
    """

    attention: AttentionRule = "plain"
    norm: NormRule = "plain"
    activation: ActivationRule = "plain"
    gate: GateRule = "plain"
    unit_norm: NormRule = "plain"
    target: Target = "prob"
    name: str = "custom"

    def __post_init__(self):
        allowed = {
            "attention": ("plain", "detach", "attnlrp"),
            "norm": ("plain", "detach"),
            "activation": ("plain", "detach"),
            "gate": ("plain", "half"),
            "unit_norm": ("plain", "detach"),
            "target": ("prob", "logit"),
        }
        for field, values in allowed.items():
            value = getattr(self, field)
            if value not in values:
                raise ValueError(f"Rules.{field}={value!r}; expected one of {values}")

    def replace(self, **changes) -> Rules:
        """A copy with some fields changed (e.g. `rules.replace(target="logit")`)."""
        return dataclasses.replace(self, **changes)


_LIBRA = dict(attention="detach", norm="detach", activation="detach", gate="half", unit_norm="detach")

PRESETS: dict[str, Rules] = {
    "vanilla": Rules(target="prob", name="vanilla"),
    "vanilla_logit": Rules(target="logit", name="vanilla_logit"),
    "libra": Rules(**_LIBRA, target="prob", name="libra"),
    "libra_logit": Rules(**_LIBRA, target="logit", name="libra_logit"),
    "decompx": Rules(**{**_LIBRA, "gate": "plain"}, target="logit", name="decompx"),
    "attnlrp": Rules(**{**_LIBRA, "attention": "attnlrp"}, target="logit", name="attnlrp"),
    "cp_lrp": Rules(**{**_LIBRA, "activation": "plain", "gate": "plain"}, target="prob", name="cp_lrp"),
    "wo_att": Rules(**{**_LIBRA, "attention": "plain"}, target="prob", name="wo_att"),
    "wo_ln": Rules(**{**_LIBRA, "norm": "plain"}, target="prob", name="wo_ln"),
    "wo_act": Rules(**{**_LIBRA, "activation": "plain"}, target="prob", name="wo_act"),
    "wo_gate": Rules(**{**_LIBRA, "gate": "plain"}, target="prob", name="wo_gate"),
}
"""The presets (README, "Rule presets"). `vanilla` = NG, `libra_logit` = WO-Head, `cp_lrp` = AliLRP."""


def get_rules(rules: str | Rules, target: Target | None = None) -> Rules:
    """Resolve a preset name or `Rules`, optionally overriding the explained scalar."""
    if isinstance(rules, str):
        if rules not in PRESETS:
            raise ValueError(f"unknown rule preset {rules!r}; known presets: {sorted(PRESETS)}")
        rules = PRESETS[rules]
    elif not isinstance(rules, Rules):
        raise TypeError(f"rules must be a preset name or a Rules instance, got {type(rules).__name__}")
    if target is not None:
        rules = rules.replace(target=target)
    return rules
