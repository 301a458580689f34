"""What methods need of a model, as `Capabilities` predicates, and the one place that checks them.

Each method module declares `REQUIREMENTS`: name → tuple of requirements (models/contract.py `Requirement`),
checked in order by `check`; the first unmet one raises a ValueError that names what the model lacks.
"""

from __future__ import annotations

from collections.abc import Sequence

from libra_jax.models.contract import Capabilities, Requirement


def attention(method: str) -> Requirement:
    """The blocks report attention matrices."""

    def missing(caps: Capabilities) -> str | None:
        if caps.attention:
            return None
        return f"method {method!r} reads attention matrices (a Vision Transformer); this model has no attention"

    return missing


def class_token_row(method: str) -> Requirement:
    """Token 0 is a class token whose attention row the method reads."""

    def missing(caps: Capabilities) -> str | None:
        if caps.class_token:
            return None
        return f"method {method!r} reads the class-token row of the attention; this model has no class token"

    return missing


def query_row(method: str) -> Requirement:
    """Token 0 is a class token, or the model names the attention row to read instead (`Capabilities.query_row`)."""

    def missing(caps: Capabilities) -> str | None:
        if caps.class_token or caps.query_row is not None:
            return None
        return f"method {method!r} reads the class-token row of the attention; this model has no class token"

    return missing


def relevance_pass(method: str) -> Requirement:
    """Chefer's LRP relevance pass is defined for the model (`Capabilities.relevance_gaps` is empty)."""

    def missing(caps: Capabilities) -> str | None:
        if not caps.relevance_gaps:
            return None
        gaps = ", ".join(caps.relevance_gaps)
        return f"method {method!r} (Chefer et al. CVPR'21) is not defined for this model: it has {gaps}"

    return missing


def relevance_kind(method: str, kind: str) -> Requirement:
    """The model's relevance record feeds the `kind` pass (`Capabilities.relevance_kind`)."""

    def missing(caps: Capabilities) -> str | None:
        if caps.relevance_kind == kind:
            return None
        return f"{method} read a {kind!r} relevance record; this model's is a {caps.relevance_kind!r} one"

    return missing


def blockwise(method: str) -> Requirement:
    """The model runs its blocks one at a time (`enter_blocks`, `forward_block`, `final_norm`)."""

    def missing(caps: Capabilities) -> str | None:
        if caps.blockwise:
            return None
        return f"method {method!r} runs the blocks one by one (a Vision Transformer); this model cannot"

    return missing


def head(method: str) -> Requirement:
    """`forward_head` gives the explained output."""

    def missing(caps: Capabilities) -> str | None:
        if caps.head:
            return None
        return f"{method} explains a classification head; this model has none (num_classes=0)"

    return missing


def optional_probe(method: str, kind: str) -> Requirement:
    """The model records the optional probe `kind` (`Capabilities.optional_probes`, models/contract.py)."""

    def missing(caps: Capabilities) -> str | None:
        if kind in caps.optional_probes:
            return None
        return (
            f"method {method!r} at layer={kind!r} reads the last block's {kind} output, which this model does not"
            " record (pre-norm Vision Transformers do); pass a block index instead, e.g. layer=-1 (the last block's"
            " input)"
        )

    return missing


def check(model, method: str, requirements: Sequence[Requirement]) -> None:
    """Raise ValueError with the first unmet requirement of `method` on `model`."""
    caps = model.capabilities
    for requirement in requirements:
        problem = requirement(caps)
        if problem is not None:
            raise ValueError(problem)
