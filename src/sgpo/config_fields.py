"""The training settings by topic, for `sgpo train --help` and the settings table of `sgpo report`.

A field named here that a config does not have is skipped, and a field of `SGPOConfig` named nowhere
is listed under "other SGPO settings", so this table never hides a field. Torch-free (`sgpo report`
imports it).
"""

from __future__ import annotations

#: (title, description, field names), in the order `sgpo train --help` lists them
FIELD_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "model and data",
        "the policy and the training problems (the recipe may set them too)",
        ("model_name_or_path", "dataset_name", "dataset_split", "tokenizer_name_or_path"),
    ),
    (
        "rollouts",
        "what is sampled for each problem; per_device_train_batch_size (under run) counts problems, "
        "each bringing num_generations + num_guided_generations completions",
        (
            "num_generations",
            "num_guided_generations",
            "max_prompt_length",
            "max_completion_length",
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "repetition_penalty",
            "generation_kwargs",
            "generation_batch_size",
            "generation_micro_batch_size",
            "forward_micro_batch_size",
            "backward_group_size",
            "backward_group_tokens",
            "steps_per_generation",
            "num_iterations",
            "mask_truncated_completions",
        ),
    ),
    (
        "rewards and RL term",
        "the GRPO-style term on the autonomous group (TRL's names and meanings)",
        (
            "reward_funcs",
            "reward_weights",
            "correct_reward_threshold",
            "correctness_reward",
            "loss_type",
            "importance_sampling_level",
            "scale_rewards",
            "epsilon",
            "epsilon_high",
            "delta",
            "beta",
            "use_bias_correction_kl",
        ),
    ),
    (
        "distillation",
        "the token-level KL from the strategy-conditioned policy to the unconditioned one",
        (
            "distill_coef",
            "distill_on",
            "distill_divergence",
            "distill_topk",
            "distill_proximal",
            "distill_epsilon_low",
            "distill_epsilon_high",
            "distill_kl_cap",
            "head_implementation",
            "head_chunk_size",
        ),
    ),
    ("instance weighting", "how much each problem's distillation term counts", ("instance_weighting", "instance_weight_ema")),
    (
        "data columns",
        "which data set column holds what",
        (
            "problem_column",
            "answer_column",
            "strategy_column",
            "id_column",
            "require_strategy",
            "shuffle_dataset",
            "remove_unused_columns",
        ),
    ),
    (
        "prompts",
        "the autonomous and the guided prompt",
        ("prompt_template", "guided_prompt_template", "system_prompt", "use_chat_template", "chat_template_kwargs"),
    ),
    ("model loading", "", ("model_init_kwargs", "disable_dropout")),
    ("logging", "what a run prints and logs besides the metrics (TRL's names)", ("log_completions", "num_completions_to_print")),
    (
        "LoRA (PEFT)",
        "train an adapter instead of every weight (TRL's ModelConfig names and defaults)",
        (
            "use_peft",
            "lora_r",
            "lora_alpha",
            "lora_dropout",
            "lora_target_modules",
            "lora_target_parameters",
            "lora_modules_to_save",
            "lora_task_type",
            "use_rslora",
            "use_dora",
        ),
    ),
)

#: the inherited `TrainingArguments` a run usually sets, listed before the other inherited ones
COMMON_TRAINING_ARGUMENTS: tuple[str, ...] = (
    "output_dir",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "num_train_epochs",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "report_to",
    "run_name",
    "seed",
    "bf16",
    "use_cpu",
    "resume_from_checkpoint",
    "overwrite_output_dir",
)

#: what `per_device_train_batch_size` means here (TRL: completions per device; ours: problems)
BATCH_SIZE_HELP = (
    "Problems per device per micro-step (not completions, as in TRL): each problem brings num_generations "
    "autonomous + num_guided_generations guided completions, so a micro-step samples "
    "per_device_train_batch_size x (num_generations + num_guided_generations) completions per device."
)


def grouped_fields(names: list[str], sgpo_fields: set[str] | None) -> list[tuple[str, str, list[str]]]:
    """`names` (a config's field names, in their order) by topic: the groups of `FIELD_GROUPS` with the
    fields present, "other SGPO settings" (in `sgpo_fields`, named in no group), "run (common
    TrainingArguments)" (`COMMON_TRAINING_ARGUMENTS`), then "other TrainingArguments" (the rest).
    With `sgpo_fields=None` (which fields are ours is not known) the rest is "other settings".
    Empty groups are left out."""
    present = set(names)
    placed: set[str] = set()
    out: list[tuple[str, str, list[str]]] = []

    def add(title: str, description: str, chosen: list[str]) -> None:
        placed.update(chosen)
        if chosen:
            out.append((title, description, chosen))

    for title, description, fields in FIELD_GROUPS:
        add(title, description, [f for f in fields if f in present and f not in placed])
    if sgpo_fields is not None:
        add("other SGPO settings", "", [n for n in names if n in sgpo_fields and n not in placed])
    add(
        "run (common TrainingArguments)",
        "where the run goes and how long it is",
        [f for f in COMMON_TRAINING_ARGUMENTS if f in present and f not in placed],
    )
    rest = [n for n in names if n not in placed]
    if sgpo_fields is None:
        add("other settings", "", rest)
    else:
        add("other TrainingArguments", "inherited from transformers.TrainingArguments, as documented there", rest)
    return out


#: fields of TRL's `GRPOConfig` that sgpo does not support, and why (`sgpo train` says so in one line;
#: any other GRPOConfig field it lacks is "not implemented here")
_ENTROPY = "no entropy mask or entropy bonus in the RL term (TRL's entropy is logged as a metric)"
_VLLM = "not implemented for sgpo's vLLM engine (docs/vllm.md)"
_LOG = "log_completions prints the table to the console only"
TRL_UNSUPPORTED: dict[str, str] = {
    "trust_remote_code": 'set it in model_init_kwargs ({"trust_remote_code": true})',
    "router_aux_loss_coef": "the MoE router's auxiliary loss is not added to the loss",
    "cast_lm_head_to_fp32": "the log-probabilities and divergences are computed in float32 from the LM head already",
    "num_generations_eval": "evaluate() samples num_generations (and num_guided_generations) per problem, as training",
    "ds3_gather_for_generation": "ZeRO-3 generation always gathers the whole weights",
    "pad_to_multiple_of": "not used by sgpo's generation",
    "cache_implementation": "not used by sgpo's generation",
    "vllm_model_impl": _VLLM,
    "vllm_enable_sleep_mode": _VLLM,
    "vllm_structured_outputs_regex": _VLLM,
    "sapo_temperature_neg": "loss_type sapo is not implemented (grpo, bnpo, dr_grpo and dapo are)",
    "sapo_temperature_pos": "loss_type sapo is not implemented (grpo, bnpo, dr_grpo and dapo are)",
    "vespo_k_pos": "loss_type vespo is not implemented (grpo, bnpo, dr_grpo and dapo are)",
    "vespo_lambda_pos": "loss_type vespo is not implemented (grpo, bnpo, dr_grpo and dapo are)",
    "vespo_k_neg": "loss_type vespo is not implemented (grpo, bnpo, dr_grpo and dapo are)",
    "vespo_lambda_neg": "loss_type vespo is not implemented (grpo, bnpo, dr_grpo and dapo are)",
    "multi_objective_aggregation": "the reward is the weighted sum of the reward functions (TRL's default, sum_then_normalize)",
    "sync_ref_model": "the reference model stays the initial policy",
    "ref_model_mixup_alpha": "the reference model stays the initial policy",
    "ref_model_sync_steps": "the reference model stays the initial policy",
    "top_entropy_quantile": _ENTROPY,
    "entropy_coef": _ENTROPY,
    "use_adaptive_entropy": _ENTROPY,
    "entropy_coef_min": _ENTROPY,
    "entropy_coef_max": _ENTROPY,
    "entropy_coef_delta": _ENTROPY,
    "entropy_target": _ENTROPY,
    "max_tool_calling_iterations": "rollouts do not call tools",
    "off_policy_mask_threshold": "no off-policy sequence mask (the vLLM mismatch is corrected by vllm_importance_sampling_*)",
    "log_multimodal": _LOG,
    "log_unique_prompts": _LOG,
    "log_completions_hub_repo": _LOG,
    "use_transformers_continuous_batching": "rollouts are sampled with Hugging Face generate or vLLM (use_vllm)",
    "transformers_continuous_batching_config": "rollouts are sampled with Hugging Face generate or vLLM (use_vllm)",
    "use_transformers_paged": "rollouts are sampled with Hugging Face generate or vLLM (use_vllm)",
}
