"""Shared fixtures (the golden outputs and how tests compare with them: golden.py)."""

from __future__ import annotations

import fnmatch
import types

import jax
import pytest


@pytest.fixture
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


# ---- markers (registered in pyproject.toml), assigned from the tables below ----

GOLDEN = {
    "test_bert_golden.py": ("*",),
    "test_golden.py": ("*",),
    "test_gradient_options.py": ("test_legrad_official_postprocess_equals_the_official_clip_maps",),
    "test_legrad_clip.py": ("*",),
    "test_lrp.py": ("*",),  # even its parametrisation reads the golden keys
    "test_mixer.py": ("test_*golden*",),
}
"""Tests that read ../shared/golden: module → fnmatch patterns of test function names."""

TORCH_PACKAGES = ("torch", "timm", "transformers", "open_clip")
"""A test module that imports one of these (at module level) is marked `torch`."""

SLOW = {
    # whole modules: they share module-scoped fixtures (compiles of every case), so any test of them pays it
    "test_bert_golden.py": ("*",),
    "test_cli_text.py": ("*",),  # the module's tiny-Llama folder fixture is paid by whichever test runs first
    "test_decoder.py": ("*",),
    "test_decoder_train.py": ("*",),
    "test_decoder_tokenizer.py": ("test_ids_match_transformers_and_pad_on_the_left",),  # imports transformers
    "test_explain_generation.py": ("*",),
    "test_decoder_bf16.py": ("*",),
    "test_bench_text.py": ("*",),
    "test_golden.py": ("*",),
    "test_gradient_options.py": ("*",),
    "test_legrad_clip.py": ("*",),
    "test_lrp.py": ("*",),
    "test_text_methods.py": ("*",),
    "test_text_ixg.py": ("*",),
    "test_attention_methods.py": ("test_attcat_of_a_one_block_model", "test_model_is_nontrivial"),
    "test_beit_eva.py": (
        "test_faithfulness_zeroes_beit_and_drops_eva",
        "test_fullgrad_is_complete_under_libra_logit",
        "test_legrad_blocks_see_the_shared_bias_and_rope",
        "test_methods_run",
        "test_rope_follows_the_patches",
        "test_hub_and_libra_file_loads",
        "test_forward_parity_with_timm",
        "test_vanilla_fullgrad_is_incomplete",
    ),
    "test_bert.py": ("test_completeness_and_padding", "test_forward_parity"),
    "test_cam_peers.py": (
        "test_bad_layer_lists_the_choices",
        "test_defaults_are_libragrad_definitions",
        "test_pytorch_grad_cam_recipes",
    ),
    "test_cli.py": (
        "test_benchmark_smoke",
        "test_memory_estimate_script",
        "test_explain_writes_overlays_and_prints_top5",
        "test_rules_put_each_plain_method_under_every_preset",
    ),
    "test_completeness.py": (
        "test_completeness_error_metric_uses_top1_by_default",
        "test_completeness_needs_every_rule",
        "test_fullgrad_and_every_layer_are_complete_under_libra_logit",
        "test_vanilla_fullgrad_is_incomplete",
        "test_gate_rule_is_needed_for_gated_mlps",
    ),
    "test_contract.py": (
        "test_every_single_pass_method_runs_on_the_toy",
        "test_faithfulness_on_the_toy",
        "test_fullgrad_is_complete_on_the_toy",
    ),
    "test_evaluate.py": (
        "test_cli_evaluate_methods_rules_and_model_kw",
        "test_cli_evaluate_on_a_saved_model",
        "test_every_column_filled",
    ),
    "test_docs.py": ("test_python_blocks_run_offline",),
    "test_faithfulness.py": ("test_matches_numpy_reference", "test_real_tiny_vit_drop_mode"),
    "test_hub_offline.py": ("test_cli_interface", "test_python_interface"),
    "test_image_text.py": (
        "test_cli_explains_several_prompts",
        "test_every_supported_method_takes_a_text_target",
        "test_fullgrad_is_complete_for_the_similarity_under_libra_logit",
        "test_hf_siglip_parity",
        "test_several_prompts_in_one_call_equal_separate_calls",
        "test_sigmoid_target_and_model_scale",
        "test_hf_clip_parity",
    ),
    "test_legrad.py": (
        "test_batch_equals_single_calls",
        "test_local_gradients_equal_brute_force",
        "test_multi_method_call_equals_separate_calls",
        "test_layer_selection_readout_and_minmax",
    ),
    "test_loading.py": (
        "test_forward_parity_with_timm",
        "test_resampling_matches_timm",
        "test_converter_cli_round_trip",
    ),
    "test_lock.py": (
        "test_lock_of_a_killed_run_does_not_block_the_resume",
        "test_second_run_is_refused_while_the_first_finishes",
    ),
    "test_memory.py": (
        "test_bfloat16_compute_is_close_to_float32",
        "test_chunked_equals_whole_batch",
        "test_remat_keeps_param_names_and_maps",
    ),
    "test_methods.py": (
        "test_jit_equals_eager_and_batch_equals_single",
        "test_multi_method_equals_separate_calls",
        "test_smoothgrad_is_deterministic_and_batch_invariant",
        "test_vmap_of_fn_equals_loop",
        "test_ig_completeness_and_paper_variant",
        "test_multi_target_reuses_forward",
        "test_named_constructor_under_jit",
    ),
    "test_mixer.py": (
        "test_libra_checkpoint_round_trip",
        "test_golden_logits_and_patches",
        "test_golden_preset_maps",
        "test_completeness_metric_counts_the_unassigned_biases",
        "test_faithfulness_zeroes_tokens",
        "test_forward_parity_with_timm",
        "test_fullgrad_is_complete_under_libra_logit",
        "test_vanilla_fullgrad_is_incomplete",
    ),
    "test_ops.py": (
        "test_activation",
        "test_attention",
        "test_attention_detach_has_no_qk_gradient_and_probe_is_dA",
        "test_layer_norm",
    ),
    "test_registry.py": ("test_registry_agrees_with_timm",),
    "test_resize.py": ("test_matches_torch_up_and_down",),
    "test_run.py": (
        "test_killed_run_resumes_to_identical_results",
        "test_two_processes_killed_and_restarted",
        "test_two_processes_with_two_devices_each",
        "test_eight_devices_equal_one",
    ),
    "test_evaluate_text.py": ("test_cli_evaluates_a_text_classifier", "test_numbers_are_the_metric_functions_*"),
    "test_text_metrics.py": ("test_oracle_classifier_on_the_benchmark",),
    "test_text_train.py": (
        "test_a_three_step_training_run_writes_a_loadable_file",
        "test_removing_the_evidence_removes_the_prediction",
    ),
    "test_train.py": (
        "test_fit_reduces_the_loss_and_the_checkpoint_round_trips",
        "test_shipped_checkpoint_is_accurate",
    ),
    "test_validate.py": ("test_normalised_images_pass_and_unnormalised_fail_eager_and_jit",),
    "test_weights.py": ("test_a_libra_file_loads_directly_and_reports_its_own_keys",),
}
"""Test functions (all their parametrisations) measured at >= 2.4 s (call + setup, all parametrisations) in a
full run with `pytest --durations=0` on the 2-core development machine; extend it from a full run's durations."""


def _matches(table: dict, item) -> bool:
    return any(fnmatch.fnmatch(item.originalname, p) for p in table.get(item.path.name, ()))


def _imports_torch(module) -> bool:
    return any(
        isinstance(v, types.ModuleType) and v.__name__.split(".")[0] in TORCH_PACKAGES for v in vars(module).values()
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _matches(GOLDEN, item):
            item.add_marker(pytest.mark.golden)
        if _matches(SLOW, item):
            item.add_marker(pytest.mark.slow)
        if _imports_torch(item.module):
            item.add_marker(pytest.mark.torch)
