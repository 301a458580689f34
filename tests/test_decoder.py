"""Decoder LMs (models/decoder.py) against transformers' PyTorch models, through the real loader.

Tiny random Llama (GQA, llama3 rope scaling, sharded checkpoint), Mistral (sliding window), Qwen2 (q/k/v
bias, tied embeddings), Qwen3 (q/k norm, head_dim ≠ hidden/heads), GPT-2 (learned positions, Conv1D,
LayerNorm, gelu_new), Gemma 2 (attention and final soft-capping, alternating sliding layers) and Gemma 3
(q/k norm, per-layer-type RoPE with linear scaling) are built with transformers, their norm weights and
biases re-randomised, saved with `save_pretrained` into a fake offline HF cache and loaded by hub name.
Checked: logits within 1e-4 at `highest` precision; a left-padded batch equals the unpadded prompts; greedy
continuation equals `generate(do_sample=False)`; FullGrad sums to the next-token logit under `libra_logit`
(not under `vanilla`), with exactly zero attribution on padding; the `attnlrp` preset equals a
stop-gradient reference written here; bad input raises clear errors.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from libra_jax.methods import core, maps
from libra_jax.ops.softcap import softcap
from libra_jax.rules import PRESETS
from libra_jax.text import text_inputs
from libra_jax.text.decoder_loading import config_from_hf, convert, load_decoder, read_safetensors
from libra_jax.text.generate import greedy_continuation
from libra_jax.text.next_token import contrast_target, next_token_target, target_at

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, N, NEW = 128, 12, 5
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8,
}
GEMMA = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=4, pad_token_id=0)
CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(COMMON, rope_parameters=LLAMA3_ROPE, mlp_bias=True), "2KB"),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(COMMON, sliding_window=4), None),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(COMMON, tie_word_embeddings=True), None),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(COMMON, head_dim=16), None),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2),
        None,
    ),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(COMMON, **GEMMA, attn_logit_softcapping=2.0, final_logit_softcapping=1.5),
        None,
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            COMMON,
            **GEMMA,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
            },
        ),
        None,
    ),
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def build_torch(case: str):
    config_cls, model_cls, kwargs, _ = CASES[case]
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
    with torch.no_grad():  # non-trivial norm scales and biases, so their parity and bias maps are tested
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.5 * torch.randn_like(p))
            elif "norm" in name or ".ln_" in name:  # Gemma's RMSNorm scales by 1 + w
                p.copy_((0 if case.startswith("gemma") else 1) + 0.5 * torch.randn_like(p))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def save_to_hub_cache(model, root, repo: str, max_shard_size) -> None:
    """`save_pretrained` into the snapshot of `repo` in an HF cache at `root` (refs/main → COMMIT)."""
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(COMMIT)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(base / "snapshots" / COMMIT, **kwargs)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    name = request.param
    torch_model = build_torch(name)
    root = tmp_path_factory.mktemp(f"hub_{name}")
    save_to_hub_cache(torch_model, root, f"tiny/{name}", CASES[name][3])
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        model, params = load_decoder(f"tiny/{name}", cache_dir=root)
    ids = np.random.RandomState(1).randint(3, VOCAB, (2, N))
    return {
        "name": name,
        "torch": torch_model,
        "model": model,
        "params": params,
        "ids": ids,
        "root": root,
        "apply": jax.jit(model.apply),  # one wrapper per model, so each input shape compiles once
    }


def jax_logits(case, ids, mask=None):
    with jax.default_matmul_precision("highest"):
        logits, _ = case["apply"]({"params": case["params"]}, text_inputs(ids, mask))
    return np.asarray(logits)


def test_sharded_checkpoint_was_exercised(case):
    snapshot = case["root"] / f"models--tiny--{case['name']}" / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors.index.json").is_file() == (CASES[case["name"]][3] is not None)


def test_logits_match_transformers(case):
    with torch.no_grad():
        ref = case["torch"](torch.tensor(case["ids"])).logits.numpy()
    err = np.abs(jax_logits(case, case["ids"]) - ref).max()
    assert err <= 1e-4, f"{case['name']}: max |logit diff| {err}"


def test_left_padded_batch_equals_unpadded(case):
    ids, pad = case["ids"], 4
    short = ids[1, pad:]
    padded = np.stack([ids[0], np.concatenate([np.zeros(pad, int), short])])
    mask = np.stack([np.ones(N, int), np.concatenate([np.zeros(pad, int), np.ones(N - pad, int)])])
    batch = jax_logits(case, padded, mask)
    np.testing.assert_allclose(batch[1, pad:], jax_logits(case, short[None])[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(batch[0], jax_logits(case, ids[:1])[0], atol=1e-5, rtol=1e-5)


def test_greedy_continuation_matches_generate(case):
    prompt = case["ids"][0]
    with torch.no_grad():
        ref = case["torch"].generate(torch.tensor(prompt)[None], max_new_tokens=NEW, do_sample=False)[0, N:].numpy()
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(greedy_continuation, static_argnums=(0, 3))(
            case["model"], case["params"], text_inputs(prompt), NEW
        )
    np.testing.assert_array_equal(np.asarray(ours), ref)


def fullgrad_record(case, ids, mask, rules):
    """core.single_pass on one (left-padded) example explaining the next-token logit of the argmax token."""
    x = text_inputs(ids, mask)
    model, params = case["model"], case["params"]
    token = int(jax_logits(case, ids[None], mask[None])[0, -1].argmax())
    with jax.default_matmul_precision("highest"):
        rec = jax.jit(core.single_pass, static_argnums=(0, 4, 5))(
            model, params, x, target_at(N - 1, token), rules, next_token_target("logit")
        )
    return rec, np.asarray(maps.fullgrad(rec, model))


def test_fullgrad_complete_under_libra_logit_and_zero_on_padding(case):
    pad = 3
    ids = np.concatenate([np.zeros(pad, int), case["ids"][0, pad:]])
    mask = np.concatenate([np.zeros(pad, int), np.ones(N - pad, int)])
    rec, fg = fullgrad_record(case, ids, mask, PRESETS["libra_logit"])
    f = float(rec["target"])
    assert abs(fg.sum() - f) <= 1e-5 * abs(f) + 1e-5, f"{case['name']}: Σ FullGrad {fg.sum()} vs logit {f}"
    assert np.all(fg[:pad] == 0) and np.all(np.asarray(maps.ixg(rec, case["model"]))[:pad] == 0)
    has_bias = case["model"].config.qkv_bias or case["model"].config.mlp_bias
    assert has_bias == any(np.abs(m).max() > 0 for m in rec["bias"].values())  # the bias maps are in the sum
    rec_v, fg_v = fullgrad_record(case, ids, mask, PRESETS["vanilla_logit"])
    assert abs(fg_v.sum() - float(rec_v["target"])) > 1e-2, "vanilla gradients should not be complete"


def _sb(value, grad_scale):
    """Value `value`, gradient × grad_scale (stop-gradient form of SwapBackward(v, s·v))."""
    return grad_scale * value + jax.lax.stop_gradient((1 - grad_scale) * value)


def attnlrp_reference(params, cfg, ids, rotary):
    """Llama forward from scratch with AttnLRP as stop-gradients: rms constant, SiLU gate constant, ½ on the
    gated product, attention probabilities ¼ and v ½ after RoPE (cos/sin from transformers' `rotary`, the
    llama3-scaled table). Returns a function h₀ (N, C) → logits."""
    sg = jax.lax.stop_gradient
    n, d, h, kv = len(ids), cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
    cos, sin = (t[0].numpy() for t in rotary(torch.zeros(1, n, d), torch.arange(n)[None]))

    def rms(x, w):
        return x * sg(jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + cfg.norm_eps)) * w

    def lin(p, x):
        return x @ p["kernel"] + p.get("bias", 0.0)

    def rope(t):  # (heads, n, d)
        return t * cos + jnp.concatenate([-t[..., d // 2 :], t[..., : d // 2]], -1) * sin

    causal = np.where(np.tril(np.ones((n, n), bool)), 0.0, np.finfo(np.float32).min)

    def forward(x):
        for i in range(cfg.num_layers):
            p = params[f"blocks_{i}"]
            a = rms(x, p["norm1"]["scale"])
            q = rope(lin(p["attn"]["q_proj"], a).reshape(n, h, d).transpose(1, 0, 2))
            k = rope(lin(p["attn"]["k_proj"], a).reshape(n, kv, d).transpose(1, 0, 2))
            v = lin(p["attn"]["v_proj"], a).reshape(n, kv, d).transpose(1, 0, 2)
            k, v = jnp.repeat(k, h // kv, 0), jnp.repeat(v, h // kv, 0)
            probs = _sb(jax.nn.softmax(q @ k.transpose(0, 2, 1) / np.sqrt(d) + causal, -1), 0.25)
            out = (probs @ _sb(v, 0.5)).transpose(1, 0, 2).reshape(n, h * d)
            x = x + lin(p["attn"]["o_proj"], out)
            m = rms(x, p["norm2"]["scale"])
            g, u = lin(p["mlp"]["fc1_g"], m), lin(p["mlp"]["fc1_x"], m)
            x = x + lin(p["mlp"]["fc2"], _sb(g * sg(jax.nn.sigmoid(g)) * u, 0.5))
        return lin(params["lm_head"], rms(x, params["norm"]["scale"]))

    return forward


@pytest.mark.parametrize("case", ["llama"], indirect=True)
def test_attnlrp_equals_stop_gradient_reference(case):
    model, params, ids = case["model"], case["params"], case["ids"][0]
    rec, _ = fullgrad_record(case, ids, np.ones(N, int), PRESETS["attnlrp"])
    token = int(np.asarray(rec["logits"])[-1].argmax())
    forward = attnlrp_reference(params, model.config, ids, case["torch"].model.rotary_emb)
    h0 = params["embed_tokens"][ids]
    with jax.default_matmul_precision("highest"):
        f, grad = jax.value_and_grad(lambda x: forward(x)[-1, token])(h0)
    ours = np.asarray(maps.ixg(rec, model))
    ref = np.asarray((h0 * grad).sum(-1))
    np.testing.assert_allclose(float(f), float(rec["target"]), rtol=1e-5)
    np.testing.assert_allclose(ours, ref, atol=1e-5 * np.abs(ref).max(), rtol=1e-4)
    assert np.abs(ref).max() > 0
    rematted = jax.jit(core.single_pass, static_argnums=(0, 4, 5))(
        model.clone(remat=True),
        params,
        text_inputs(ids),
        target_at(N - 1, token),
        PRESETS["attnlrp"],
        next_token_target("logit"),
    )  # per-block rematerialisation changes memory, not the record
    np.testing.assert_allclose(np.asarray(maps.ixg(rematted, model)), ours, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", ["llama"], indirect=True)
def test_bad_inputs_raise_clear_errors(case):
    model = case["model"]
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 128\)"):
        model.check_inputs(text_inputs(np.array([[5, VOCAB + 3]])))
    with pytest.raises(ValueError, match="65 tokens exceed the model's 64 positions"):
        model.check_inputs(text_inputs(np.zeros((1, 65), int)))
    with pytest.raises(ValueError, match="token ids must be integers"):
        text_inputs(np.zeros((1, 4), np.float32))
    cfg = json.loads((case["root"] / "models--tiny--llama" / "snapshots" / COMMIT / "config.json").read_text())
    with pytest.raises(ValueError, match="unsupported decoder model_type 'falcon'"):
        config_from_hf({**cfg, "model_type": "falcon"})


def test_softcap_gate_rule():
    """c·tanh(x/c): 'detach' backward is the gate tanh(u)/u (so x·grad = value), 'plain' the true derivative."""
    x = jnp.array([-40.0, -3.0, -1e-6, 0.0, 2e-5, 0.7, 25.0])
    cap = 5.0
    value, grad = jax.vmap(jax.value_and_grad(lambda t: softcap(t, cap, "detach")))(x)
    np.testing.assert_allclose(value, cap * np.tanh(np.asarray(x) / cap), rtol=1e-6)
    np.testing.assert_allclose(x * grad, value, rtol=1e-6, atol=1e-12)
    plain = jax.vmap(jax.grad(lambda t: softcap(t, cap, "plain")))(x)
    np.testing.assert_allclose(plain, 1 - np.tanh(np.asarray(x, np.float64) / cap) ** 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["llama"], indirect=True)
def test_targets_and_contrast_completeness(case):
    """log-prob / prob targets equal torch's; the logit contrast a − b is FullGrad-complete under libra_logit."""
    ids = case["ids"][0]
    with torch.no_grad():
        ref = torch.log_softmax(case["torch"](torch.tensor(ids)[None]).logits[0, 5], -1).numpy()
    logits = jnp.asarray(jax_logits(case, ids[None])[0])
    y = target_at(5, 17)
    np.testing.assert_allclose(next_token_target("log_prob")(logits, y), ref[17], rtol=1e-5)
    np.testing.assert_allclose(next_token_target("prob")(logits, y), np.exp(ref[17]), rtol=1e-5)
    with pytest.raises(ValueError, match="next-token target kind 'score'"):
        next_token_target("score")
    with jax.default_matmul_precision("highest"):
        rec = core.single_pass(
            case["model"],
            case["params"],
            text_inputs(ids),
            target_at(N - 1, 17, 40),
            PRESETS["libra_logit"],
            contrast_target(),
        )
    f = float(rec["target"])
    np.testing.assert_allclose(f, float(logits[N - 1, 17] - logits[N - 1, 40]), rtol=1e-5)
    assert abs(float(maps.fullgrad(rec, case["model"]).sum()) - f) <= 1e-5 * abs(f) + 1e-5


@pytest.mark.parametrize("case", ["llama"], indirect=True)
def test_loader_reports_key_diff_and_reads_folders(case):
    snapshot = case["root"] / "models--tiny--llama" / "snapshots" / COMMIT
    model, params = load_decoder(snapshot)  # a save_pretrained folder, sharded
    assert jax.tree.all(jax.tree.map(np.array_equal, params, case["params"]))
    state = read_safetensors(sorted(snapshot.glob("*.safetensors")))
    low_model, low = load_decoder(snapshot, dtype="bfloat16")  # params stored and computed in bf16
    assert low_model.dtype == "bfloat16" and {p.dtype for p in jax.tree.leaves(low)} == {jnp.dtype("bfloat16")}
    bf16_state = {k: v.astype(jnp.bfloat16) for k, v in state.items()}  # a bf16 checkpoint is not widened
    bf16_params = convert(model, bf16_state, source="bf16", dtype="bfloat16")
    assert jax.tree.all(jax.tree.map(np.array_equal, bf16_params, low))
    state["model.layers.0.self_attn.rotary.weight"] = state.pop("model.layers.1.mlp.up_proj.weight")
    with pytest.raises(ValueError) as err:
        convert(model, state, source="edited")
    assert "- blocks_1/mlp/fc1_x/kernel" in str(err.value)
    assert "+ model.layers.0.self_attn.rotary.weight" in str(err.value)
    with pytest.raises(ValueError, match="neither an existing file or folder nor an HF repo id"):
        load_decoder("not/a/folder-or-repo")


def test_config_from_older_gemma3_json():
    """Pre-v5 Gemma 3 config.json: no layer_types (every 6th layer global), rope_scaling + rope_local_base_freq."""
    cfg = config_from_hf(
        {
            "model_type": "gemma3_text",
            "vocab_size": 262208,
            "hidden_size": 2560,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "intermediate_size": 10240,
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": 256,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "sliding_window": 1024,
            "sliding_window_pattern": 6,
        }
    )
    assert [cfg.is_sliding(i) for i in range(8)] == [True] * 5 + [False] + [True] * 2
    assert (cfg.rope_theta, cfg.rope_scaling.kind, cfg.rope_scaling.factor) == (1e6, "linear", 8.0)
    assert (cfg.local_rope_theta, cfg.local_rope_scaling.kind) == (1e4, "default")
    assert cfg.act == "gelu_tanh" and cfg.tie_embeddings and cfg.qk_norm and cfg.norm_offset == 1.0
