"""`explain_generation`: each token of a (greedy or given) continuation explained over every earlier token.

    fn = explain_generation(model, ["fullgrad", "ixg"], rules="libra_logit")
    out = fn(params, tokenizer("The capital of France is"), 5)      # greedy: 5 new tokens
    out = fn(params, prompt_inputs, continuation_ids)               # teacher-forced: given (B, n) ids
    out.maps["fullgrad"]                                            # (B, n, N + n)

Row i of a map explains generated token i (at position N + i, predicted at N + i − 1) over all N + n
positions; positions ≥ N + i are exactly 0 (the causal mask: nothing there is read). The prompt and its
continuation run through ONE forward; the backward is vmapped over the n targets (`libra_jax.attribution`'s
multi-target path with y (B, n, 2) of (position, token) pairs, `text.next_token`).

The methods that read one fixed attention row (GradSAM, raw attention, rollout, GenAtt, TokenTM) read a
decoder's last position, which is right for one next token but not for n targets at n positions: they are
refused here (explain one next token with `attribution` on the prompt instead).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from libra_jax import validate
from libra_jax.methods.api import attribution
from libra_jax.methods.maps import ATTENTION_METHODS
from libra_jax.models.text_inputs import TextInputs, text_inputs
from libra_jax.rules import Rules, get_rules
from libra_jax.text.generate import greedy_continuation
from libra_jax.text.next_token import KINDS, continuation_y, next_token_target


@struct.dataclass
class GenerationExplanation:
    """tokens (B, N + n) int32: the (left-padded) prompt, then the continuation; attention_mask (B, N + n);
    maps (B, n, N + n) float32 per method (a dict for a list of methods); targets (B, n) float32: the explained
    value of each continuation token (its logit, log-probability or probability); prompt_length N."""

    tokens: jax.Array
    attention_mask: jax.Array
    maps: jax.Array | dict[str, jax.Array]
    targets: jax.Array
    prompt_length: int = struct.field(pytree_node=False)

    @property
    def continuation(self) -> jax.Array:
        """(B, n) int32: the generated (or given) tokens."""
        return self.tokens[:, self.prompt_length :]


def explain_generation(
    model,
    method: str | Sequence[str],
    rules: str | Rules = "libra",
    target: str | None = None,
    **options,
):
    """Build `fn(params, inputs, continuation) -> GenerationExplanation` for a decoder LM.

    Args:
      model: a decoder (`Capabilities.kind == "decoder"`, e.g. from `libra_jax.text.decoder_loading.load_decoder`).
      method: a method name or a list of them (`libra_jax.attribution`'s), except the fixed-row attention methods.
      rules: a preset name or a `Rules`.
      target: "logit", "log_prob" or "prob" of each continuation token; default: the preset's explained scalar
        (the probability under "libra" / "vanilla", the logit under "libra_logit").
      **options: `libra_jax.attribution`'s options (chunk_size, check_inputs, method options such as steps=).
    Returns:
      fn(params, inputs, continuation): inputs a `TextInputs` (B, N) of prompts, left-padded; continuation
      either (B, n) int token ids (teacher-forced) or an int n (greedy, as transformers'
      `generate(do_sample=False)` without an EOS stop). Raises ValueError for a prompt plus continuation longer
      than the context, right padding, or a continuation of the wrong shape.
    """
    if model.capabilities.kind != "decoder":
        raise ValueError(
            f"explain_generation explains a decoder LM; this model's kind is {model.capabilities.kind!r}"
            " (use libra_jax.attribution for classifiers)"
        )
    names = [method] if isinstance(method, str) else list(method)
    fixed_row = sorted(set(names) & set(ATTENTION_METHODS))
    if fixed_row:
        raise ValueError(
            f"{fixed_row} read one fixed attention row (the last position), not each continuation token's own;"
            " pick gradient methods (e.g. ixg, fullgrad, fullgrad_plus, attcat, ig) or explain one next token"
            " with libra_jax.attribution"
        )
    rules = get_rules(rules)
    kind = rules.target if target is None else target
    if kind not in KINDS:
        raise ValueError(f"explain_generation target {kind!r}; expected one of {KINDS}")
    target_fn = next_token_target(kind)
    attribute = validate.jit(  # out-of-vocabulary ids raise the ValueError of an eager call
        attribution(model, method, rules, target=target_fn, return_tokens=True, return_logits=True, **options)
    )
    greedy = jax.jit(jax.vmap(functools.partial(greedy_continuation, model), in_axes=(None, 0, None)), static_argnums=2)
    read_targets = jax.jit(jax.vmap(jax.vmap(target_fn, in_axes=(None, 0))))
    context = model.config.max_length

    def fn(params, inputs: TextInputs, continuation) -> GenerationExplanation:
        if not isinstance(inputs, TextInputs):
            raise ValueError(
                f"explain_generation takes the prompts as a TextInputs (B, N) (a decoder tokenizer from"
                f" libra_jax.text.load_text_tokenizer); got {type(inputs).__name__}"
            )
        batch, n_prompt = inputs.ids.shape
        if not np.all(np.asarray(inputs.attention_mask)[:, -1]):
            raise ValueError("prompts must be left-padded (the continuation follows each prompt's last token)")
        generate = isinstance(continuation, int | np.integer)
        if generate:
            n = int(continuation)
        else:
            continuation = jnp.asarray(continuation)
            if continuation.ndim != 2 or continuation.shape[0] != batch:
                raise ValueError(f"continuation must be (B={batch}, n) token ids or an int; got {continuation.shape}")
            n = continuation.shape[1]
        if n < 1:
            raise ValueError(f"the continuation needs at least one token; got {n}")
        if n_prompt + n > context:
            raise ValueError(
                f"prompt ({n_prompt} tokens) + continuation ({n} tokens) exceed the model's context of {context}"
                " positions; shorten the prompt or explain fewer tokens"
            )
        if generate:
            model.check_inputs(inputs)
            continuation = greedy(params, inputs, n)
        ids = jnp.concatenate([inputs.ids, jnp.asarray(continuation, jnp.int32)], axis=1)
        mask = jnp.concatenate([inputs.attention_mask, jnp.ones((batch, n), jnp.int32)], axis=1)
        y = continuation_y(n_prompt, ids[:, n_prompt:])
        maps, logits = attribute(params, text_inputs(ids, mask), y)
        return GenerationExplanation(ids, mask, maps, read_targets(logits.astype(jnp.float32), y), n_prompt)

    return fn
