"""User-facing method names ('libra_fullgrad_plus', 'gradcam', 'attnlrp') and rule presets → a method table.

    resolve_methods(["libra_fullgrad_plus", "gradcam"])      → {'libra_fullgrad_plus': ('fullgrad_plus', 'libra'),
                                                                 'gradcam': ('gradcam', 'vanilla')}
    resolve_methods(["gradcam"], rules=["vanilla", "libra"]) → {'vanilla_gradcam': ('gradcam', 'vanilla'),
                                                                 'libra_gradcam': ('gradcam', 'libra')}

The command line's `--method` and `--rules` mean exactly this, in every command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from libra_jax.methods.api import resolve_method
from libra_jax.rules import get_rules

MethodTable = Mapping[str, tuple[str, str]]
"""Output name → (method, preset), e.g. {'libra_fullgrad_plus': ('fullgrad_plus', 'libra')}."""


def resolve_methods(names: Sequence[str], rules: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
    """Method names → MethodTable, duplicates dropped, in order.

    Args:
      names: user-facing names; 'libra_<method>' and the LRP preset names ('attnlrp', ...) imply a preset,
        a plain method name implies 'vanilla'.
      rules: None: every name under the preset it implies. Otherwise rule presets: each plain name runs
        under every one of them, and a name implying a preset must imply one of them. With one preset
        the output names are the given names; with several, '<preset>_<name>' for the plain names.
    Raises:
      ValueError: an unknown method or preset, or a name implying a preset outside `rules`.
    """
    if not names:
        raise ValueError("no method given: name at least one, e.g. libra_fullgrad_plus")
    if rules is not None:
        if not rules:
            raise ValueError("no rule preset given: name at least one, e.g. libra")
        for preset in rules:
            get_rules(preset)  # raises, listing the presets, for an unknown one
    out = {}
    for name in dict.fromkeys(names):
        method, preset = resolve_method(name)
        if rules is None:
            out[name] = (method, preset)
        elif name == method:  # a plain name: under every preset
            several = len(set(rules)) > 1
            out |= {(f"{p}_{name}" if several else name): (method, p) for p in dict.fromkeys(rules)}
        elif preset in rules:
            out[name] = (method, preset)
        else:
            raise ValueError(
                f"method {name!r} implies the {preset!r} rules, which conflicts with --rules {' '.join(rules)}"
            )
    return out


def by_preset(methods: MethodTable) -> dict[str, list[str]]:
    """{preset: [method, ...]}: the distinct methods each preset of the table runs (one pass each), in order."""
    out: dict[str, list[str]] = {}
    for method, preset in methods.values():
        out.setdefault(preset, [])
        if method not in out[preset]:
            out[preset].append(method)
    return out
